"""Why a message could not be indexed: the codes sent as `mrb-error-code` on the DLQ.

Each code names one cause an operator can act on; the detail says which element.
"""

from __future__ import annotations

from enum import StrEnum


class RejectCode(StrEnum):
    """DLQ error codes (stable: hospitals and dashboards match on them)."""

    MISSING_HEADER = "MISSING_HEADER"  # mrb-hospital or mrb-message-id absent
    INVALID_MESSAGE_ID = "INVALID_MESSAGE_ID"  # mrb-message-id is not a UUID
    UNKNOWN_HOSPITAL = "UNKNOWN_HOSPITAL"  # mrb-hospital not in the registry
    UNKNOWN_KEY = "UNKNOWN_KEY"  # mrb-key-id not registered for that hospital
    REVOKED_KEY = "REVOKED_KEY"  # the key was revoked: nothing signed with it is accepted
    BAD_SIGNATURE = "BAD_SIGNATURE"  # missing, malformed or not matching the bytes
    UNSUPPORTED_CONTENT_TYPE = "UNSUPPORTED_CONTENT_TYPE"  # not application/fhir+json
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # value over MRB_MAX_MESSAGE_BYTES
    INVALID_ENCODING = "INVALID_ENCODING"  # value is not valid UTF-8
    MALFORMED_JSON = "MALFORMED_JSON"  # JSON syntax error
    NESTING_TOO_DEEP = "NESTING_TOO_DEEP"  # JSON nested deeper than the limit
    NOT_FHIR = "NOT_FHIR"  # JSON object without a resourceType
    UNSUPPORTED_FHIR_VERSION = "UNSUPPORTED_FHIR_VERSION"  # e.g. STU3 content
    UNSUPPORTED_RESOURCE_TYPE = "UNSUPPORTED_RESOURCE_TYPE"  # single resource out of scope
    UNSUPPORTED_BUNDLE_TYPE = "UNSUPPORTED_BUNDLE_TYPE"  # searchset, history, *-response
    INVALID_FHIR = "INVALID_FHIR"  # an in-scope resource fails FHIR R4 validation
    NO_RESULT = "NO_RESULT"  # no DiagnosticReport, Observation or ImagingStudy
    PATIENT_NOT_IDENTIFIED = "PATIENT_NOT_IDENTIFIED"  # subject resolves to no identifier
    # Its identifiers lead to a person holding another number of a national system.
    PATIENT_IDENTITY_CONFLICT = "PATIENT_IDENTITY_CONFLICT"
    INVALID_PATIENT_IDENTIFIER = "INVALID_PATIENT_IDENTIFIER"  # e.g. bad ID check digit
    NON_HUMAN_PATIENT = "NON_HUMAN_PATIENT"  # Patient with the patient-animal extension
    RESULT_NOT_IDENTIFIED = "RESULT_NOT_IDENTIFIED"  # no business identifier and no id
    PROCESSING_FAILED = "PROCESSING_FAILED"  # unexpected error; see the worker log


class Rejected(Exception):
    """Raised by ingest when a message must go to the DLQ."""

    def __init__(self, code: RejectCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
