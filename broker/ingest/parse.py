"""One entry point from a message value to the results it carries."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import tzinfo

from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.results import ParsedMessage
from broker.ingest.fhir_bundle import read_entries
from broker.ingest.fhir_results import extract_results
from broker.ingest.fhir_validation import FhirValidation
from broker.ingest.message_json import decode_json


@dataclass(frozen=True)
class ParseLimits:
    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    fhir_validation: FhirValidation = "fast"  # MRB_FHIR_VALIDATION


def parse_message(
    value: bytes,
    *,
    hospital: str,
    zone: tzinfo,
    content_type: str | None = None,
    limits: ParseLimits = ParseLimits(),
    registry: IdentifierRegistry | None = None,
) -> ParsedMessage:
    """Parse, validate and extract; raise Rejected with a DLQ code when that fails."""
    doc = decode_json(value, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    index = read_entries(doc, content_type, limits.fhir_validation)
    parsed = extract_results(index, hospital=hospital, zone=zone, registry=registry)
    return replace(parsed, document=doc)
