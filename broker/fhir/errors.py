"""The refusals of the FHIR use cases, as domain errors carrying their FHIR issue code.

The FHIR edge (broker/api/routes/fhir.py) maps them once to a status and an
OperationOutcome: invalid, code-invalid and not-supported 400, forbidden 403 (and IHE
PIXm's unknown targetSystem: 403 code-invalid), not-found 404, deleted 410 (withdrawn, or
its payload purged), throttled 429.
"""

from __future__ import annotations

from broker.domain.errors import Gone, Invalid, NotAllowed, NotFound


def invalid(diagnostics: str) -> Invalid:
    """A parameter value mrb cannot read."""
    return Invalid("Invalid FHIR request", diagnostics, issue="invalid")


def not_supported(diagnostics: str) -> Invalid:
    """A parameter or modifier mrb does not offer."""
    return Invalid("Not supported", diagnostics, issue="not-supported")


def forbidden(diagnostics: str) -> NotAllowed:
    """A request the caller may not make."""
    return NotAllowed("Forbidden", diagnostics, issue="forbidden")


def not_found(diagnostics: str) -> NotFound:
    """An unknown resource type or id."""
    return NotFound("Not found", diagnostics, issue="not-found")


def gone(diagnostics: str) -> Gone:
    """A resource withdrawn by its hospital, or whose payload was purged."""
    return Gone("Gone", diagnostics, issue="deleted")


def code_invalid(diagnostics: str) -> Invalid:
    """A code or system mrb does not recognise (IHE PIXm: the source's domain), 400."""
    return Invalid("Invalid FHIR request", diagnostics, issue="code-invalid")


def unknown_target(diagnostics: str) -> NotAllowed:
    """IHE PIXm 2:3.83.4.2.2.4: a targetSystem not recognised is 403 `code-invalid`."""
    return NotAllowed("Forbidden", diagnostics, issue="code-invalid")
