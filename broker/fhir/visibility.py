"""Which patient identifiers a caller may see (issue "Patient identity across hospitals").

A caller acting for hospital H sees, of the identifiers hospitals sent for a person:

- national identifiers: those `broker.domain.identifiers.normalise` gives the scope
  NATIONAL (the resident ID and whatever the identifier-system registry makes national);
- every identifier that came in a payload H itself sent (its own MRNs, visit numbers...).

Another hospital's MRN is that hospital's business: it means nothing at H, and showing
it tells H where else the patient was treated beyond the results it is served. The rule is
applied wherever mrb renders a Patient or a reference to one (broker.fhir.resources).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.domain.identifiers import (
    IdentifierScope,
    InvalidIdentifier,
    PatientIdentifier,
    normalise,
)


def normalised(ident: Mapping[str, Any], *, hospital: str) -> PatientIdentifier | None:
    """The FHIR Identifier as `hospital` published it, normalised; None when it has no
    value or breaks its system's rules (a national system with a wrong check digit is not
    a national identifier)."""
    system, value = ident.get("system"), ident.get("value")
    if not isinstance(value, str):
        return None
    try:
        return normalise(system if isinstance(system, str) else None, value, hospital=hospital)
    except InvalidIdentifier:
        return None


def national(ident: Mapping[str, Any], *, hospital: str) -> PatientIdentifier | None:
    """The identifier normalised when it links across hospitals, else None."""
    found = normalised(ident, hospital=hospital)
    return found if found is not None and found.scope is IdentifierScope.NATIONAL else None


def visible(ident: object, *, source: str, viewer: str | None) -> bool:
    """May a caller of hospital `viewer` see this identifier, sent by hospital `source`?

    `viewer` None renders as the sending hospital itself would see it (a single payload,
    unfiltered): the FHIR use cases always name the caller's hospital."""
    if not isinstance(ident, Mapping):
        return False
    return viewer is None or source == viewer or national(ident, hospital=source) is not None
