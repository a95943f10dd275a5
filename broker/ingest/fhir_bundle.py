"""A FHIR message's resources and how they reference each other.

Validation (fhir_validation.py) follows the fhir.resources R4B models, wire-compatible with
R4 for the resources mrb reads; extraction then works on the received JSON, so nothing is
re-serialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.domain.rejections import RejectCode, Rejected
from broker.ingest.fhir_validation import IN_SCOPE, FhirValidation, validate_resource

Resource = dict[str, Any]

# Bundles that carry content to store; searchset/history/*-response are query answers.
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
        # Extraction asks for each type several times per message: grouped once here.
        self._by_type: dict[str, list[Resource]] = {}
        for entry in entries:
            res = entry.resource
            rtype, rid = res.get("resourceType"), res.get("id")
            if entry.full_url:
                self._by_key.setdefault(entry.full_url, res)
            if isinstance(rtype, str):  # what is no name equals no type asked for
                self._by_type.setdefault(rtype, []).append(res)
                if isinstance(rid, str):
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
        """The resources of one type, in Bundle order (a new list each call)."""
        return list(self._by_type.get(resource_type, ()))


def read_entries(
    doc: Resource, content_type: str | None, validation: FhirValidation = "fast"
) -> BundleIndex:
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
        etype = entry.resource.get("resourceType")
        if etype is not None and not isinstance(etype, str):
            raise Rejected(
                RejectCode.INVALID_FHIR, f"Bundle.entry[{index}].resource.resourceType is no name"
            )
        if etype in IN_SCOPE:
            where = f"Bundle.entry[{index}].resource ({etype})" if rtype == "Bundle" else rtype
            validate_resource(entry.resource, where, validation)
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
