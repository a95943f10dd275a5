"""A FHIR message's resources and how they reference each other.

Validation uses fhir.resources (R4B models: wire-compatible with R4 for the resources
mrb reads); extraction then works on the received JSON, so nothing is re-serialised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class as r4_model
from fhir.resources.STU3 import get_fhir_model_class as stu3_model
from pydantic import ValidationError

from broker.domain.rejections import RejectCode, Rejected

Resource = dict[str, Any]

IN_SCOPE = frozenset({"Patient", "DiagnosticReport", "Observation", "ImagingStudy"})
# Bundles that carry content to store; searchset/history/*-response are query answers.
_ZONE_LESS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
ACCEPTED_BUNDLE_TYPES = frozenset({"collection", "transaction", "batch", "document", "message"})


@dataclass
class Entry:
    resource: Resource
    full_url: str | None


class BundleIndex:
    """Resolves references inside one message (fullUrl, Type/id, versioned, urn:uuid)."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._by_key: dict[str, Resource] = {}
        for entry in entries:
            res = entry.resource
            rtype, rid = res.get("resourceType"), res.get("id")
            if entry.full_url:
                self._by_key.setdefault(entry.full_url, res)
            if isinstance(rtype, str) and isinstance(rid, str):
                self._by_key.setdefault(f"{rtype}/{rid}", res)

    def resolve(self, reference: object) -> Resource | None:
        """Return the resource a Reference.reference points at, if it is in the message."""
        if not isinstance(reference, str) or not reference:
            return None
        ref = reference.split("/_history/")[0]
        if ref in self._by_key:
            return self._by_key[ref]
        parts = ref.rstrip("/").split("/")
        if len(parts) >= 2:  # absolute URL on another base: fall back to Type/id
            return self._by_key.get(f"{parts[-2]}/{parts[-1]}")
        return None

    def of_type(self, resource_type: str) -> list[Resource]:
        return [e.resource for e in self.entries if e.resource.get("resourceType") == resource_type]


def read_entries(doc: Resource, content_type: str | None) -> BundleIndex:
    """Unpack a message into its entries and validate the in-scope ones."""
    _check_declared_version(content_type)
    rtype = doc["resourceType"]
    if rtype == "Bundle":
        btype = doc.get("type")
        if btype not in ACCEPTED_BUNDLE_TYPES:
            raise Rejected(
                RejectCode.UNSUPPORTED_BUNDLE_TYPE,
                f"Bundle.type {btype!r} is not accepted; send a collection or transaction",
            )
        raw_entries = doc.get("entry") or []
        if not isinstance(raw_entries, list):
            raise Rejected(RejectCode.INVALID_FHIR, "Bundle.entry must be an array")
        entries = [
            Entry(e["resource"], e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None)
            for e in raw_entries
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
    elif rtype in IN_SCOPE:
        entries = [Entry(doc, None)]
    else:
        raise Rejected(
            RejectCode.UNSUPPORTED_RESOURCE_TYPE,
            f"{rtype} is not a result; send a Bundle, DiagnosticReport, Observation "
            "or ImagingStudy",
        )
    for index, entry in enumerate(entries):
        if entry.resource.get("resourceType") in IN_SCOPE:
            _validate(entry.resource, index if rtype == "Bundle" else None)
    return BundleIndex(entries)


def _check_declared_version(content_type: str | None) -> None:
    if not content_type:
        return
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "fhirversion" and not value.strip().startswith("4.0"):
            raise Rejected(
                RejectCode.UNSUPPORTED_FHIR_VERSION,
                f"content-type declares fhirVersion={value.strip()}; mrb accepts FHIR R4 (4.0)",
            )


def _validate(resource: Resource, entry_index: int | None) -> None:
    rtype = str(resource["resourceType"])
    where = f"Bundle.entry[{entry_index}].resource ({rtype})" if entry_index is not None else rtype
    try:
        r4_model(rtype).model_validate(resource)
    except ValidationError as exc:
        if all(_zone_less(e) for e in exc.errors()):
            return  # tolerated: extraction gives such times the hospital's zone
        if _is_stu3(rtype, resource):
            raise Rejected(
                RejectCode.UNSUPPORTED_FHIR_VERSION,
                f"{where} is FHIR STU3, not R4; convert it or upgrade the interface",
            ) from None
        first = exc.errors(include_input=False)[0]  # never echo values: they may be PHI
        path = ".".join(str(p) for p in first["loc"])
        raise Rejected(
            RejectCode.INVALID_FHIR,
            f"{where}.{path}: {first['msg']} ({exc.error_count()} error(s))",
        ) from None


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
    except (ValidationError, KeyError, ValueError):
        return False
    return True
