"""The one error the FHIR service raises: it becomes an OperationOutcome with a status."""

from __future__ import annotations


class FhirError(Exception):
    """A request the FHIR service refuses; `code` is an R4 issue-type code.

    Status codes: 400 bad parameter (invalid, not-supported), 401 no or bad token
    (login), 403 not allowed (forbidden), 404 unknown id or type (not-found), 405 an
    interaction mrb does not offer (not-supported), 406 a format other than JSON
    (not-supported), 410 a result its hospital marked entered-in-error, or whose payload
    was purged under the retention policy (deleted).
    """

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def invalid(diagnostics: str) -> FhirError:
    """A parameter value mrb cannot read (400)."""
    return FhirError(400, "invalid", diagnostics)


def not_supported(diagnostics: str) -> FhirError:
    """A parameter or modifier mrb does not offer (400)."""
    return FhirError(400, "not-supported", diagnostics)


def forbidden(diagnostics: str) -> FhirError:
    """A request the caller may not make (403)."""
    return FhirError(403, "forbidden", diagnostics)


def not_found(diagnostics: str) -> FhirError:
    """An unknown resource type or id (404)."""
    return FhirError(404, "not-found", diagnostics)
