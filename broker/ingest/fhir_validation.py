"""Validating one in-scope resource against FHIR R4, fast (compiled) or full (fhir.resources).

`fast` runs the pydantic-core schema compiled from the R4B models
(fhir_validation_schema.py, about 10x quicker); `full` runs the models themselves
(MRB_FHIR_VALIDATION=full). Both give the same verdict and the same dead-letter code
(tests/unit/test_fhir_validation_conformance.py), except that only `fast` refuses a complex
element sent as a JSON string (fhir_validation_schema.py says why). Either way a zone-less
dateTime is tolerated (DESIGN.md: extraction gives it the hospital's zone), content that is
valid FHIR STU3 is UNSUPPORTED_FHIR_VERSION, anything else INVALID_FHIR.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from fhir.resources.R4B import get_fhir_model_class as r4_model
from fhir.resources.STU3 import get_fhir_model_class as stu3_model
from pydantic import ValidationError

from broker.domain.rejections import RejectCode, Rejected
from broker.ingest.fhir_validation_schema import resource_validator

FhirValidation = Literal["fast", "full"]
# The resources mrb reads and validates; anything else in a message is carried, not read.
IN_SCOPE = frozenset({"Patient", "DiagnosticReport", "Observation", "ImagingStudy"})
Resource = dict[str, Any]

_ZONE_LESS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?")


def warm_validation(mode: FhirValidation) -> None:
    """Compile the fast validator of every in-scope type now (about a quarter second)."""
    if mode == "fast":
        for rtype in IN_SCOPE:
            resource_validator(rtype)


def validate_resource(resource: Resource, where: str, mode: FhirValidation = "fast") -> None:
    """Raise Rejected unless the resource is valid R4 (its resourceType is in scope)."""
    rtype = str(resource["resourceType"])
    errors = _full_errors(rtype, resource) if mode == "full" else _fast_errors(rtype, resource)
    if not errors or all(_zone_less(e) for e in errors):
        return  # tolerated: extraction gives such times the hospital's zone
    if _is_stu3(rtype, resource):
        raise Rejected(
            RejectCode.UNSUPPORTED_FHIR_VERSION,
            f"{where} is FHIR STU3, not R4; convert it or upgrade the interface",
        )
    first = errors[0]  # never echo values: they may be PHI
    path = ".".join(str(p) for p in first["loc"])
    raise Rejected(
        RejectCode.INVALID_FHIR, f"{where}.{path}: {first['msg']} ({len(errors)} error(s))"
    )


def _fast_errors(rtype: str, resource: Resource) -> Sequence[Any]:
    try:
        resource_validator(rtype).validate_python(resource)
    except ValidationError as exc:
        return exc.errors()
    return ()


def _full_errors(rtype: str, resource: Resource) -> Sequence[Any]:
    try:
        r4_model(rtype).model_validate(resource)
    except ValidationError as exc:
        return exc.errors()
    except Exception as exc:  # fhir_core crashes on some inputs (an int url, unknown contained)
        return [{"loc": (), "msg": f"not FHIR R4 ({type(exc).__name__})", "input": None}]
    return ()


def _zone_less(error: Any) -> bool:
    """FHIR requires a zone on a dateTime with a time; many HIS omit it (DESIGN.md)."""
    value = error.get("input")
    return (
        "DateTime" in str(error.get("msg"))
        and isinstance(value, str)
        and _ZONE_LESS.fullmatch(value) is not None
    )


def _is_stu3(rtype: str, resource: Resource) -> bool:
    try:
        stu3_model(rtype).model_validate(resource)
    except Exception:  # any failure of the STU3 models means "not STU3"
        return False
    return True
