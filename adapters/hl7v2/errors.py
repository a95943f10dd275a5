"""Why an HL7 v2 message could not be turned into FHIR: one code per cause.

Each code carries the HL7 table 0357 error code sent in ERR-3 and whether the ACK
rejects the message (AR/CR: it could not be read as a supported message at all) or
reports an application error (AE/CE: it was read, but its content is unusable).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Hl7ErrorCode(StrEnum):
    """Stable codes: interface engineers match on them in ACKs and logs."""

    PARSE = "HL7_PARSE"  # not an HL7 v2 message (no MSH first, broken encoding chars)
    ENCODING = "HL7_ENCODING"  # bytes are not valid in the declared/configured charset
    UNSUPPORTED_CHARSET = "HL7_UNSUPPORTED_CHARSET"  # MSH-18 names a charset we cannot read
    UNSUPPORTED_MESSAGE = "HL7_UNSUPPORTED_MESSAGE"  # MSH-9 is not ORU^R01
    UNSUPPORTED_VERSION = "HL7_UNSUPPORTED_VERSION"  # MSH-12 older than 2.2 or not 2.x
    NO_PATIENT = "HL7_NO_PATIENT"  # no PID, or no usable PID-3 identifier
    NO_RESULTS = "HL7_NO_RESULTS"  # no OBR group
    MISSING_FIELD = "HL7_MISSING_FIELD"  # a field the mapping needs is empty (OBR-4, OBX-3)
    INVALID_VALUE = "HL7_INVALID_VALUE"  # a value breaks its data type (NM, DTM, ...)
    STORAGE = "HL7_STORAGE"  # the outbox write failed: nothing was accepted
    BROKER_REJECTED = "HL7_BROKER_REJECTED"  # stored and sent, refused by the broker (receipt)


@dataclass(frozen=True)
class _Meaning:
    hl7_error: int  # HL7 table 0357 (ERR-3)
    reject: bool  # AR/CR rather than AE/CE
    text: str  # table 0357 display


_MEANINGS: dict[Hl7ErrorCode, _Meaning] = {
    Hl7ErrorCode.PARSE: _Meaning(100, True, "Segment sequence error"),
    Hl7ErrorCode.ENCODING: _Meaning(102, True, "Data type error"),
    Hl7ErrorCode.UNSUPPORTED_CHARSET: _Meaning(103, True, "Table value not found"),
    Hl7ErrorCode.UNSUPPORTED_MESSAGE: _Meaning(200, True, "Unsupported message type"),
    Hl7ErrorCode.UNSUPPORTED_VERSION: _Meaning(203, True, "Unsupported version id"),
    Hl7ErrorCode.NO_PATIENT: _Meaning(101, False, "Required field missing"),
    Hl7ErrorCode.NO_RESULTS: _Meaning(100, False, "Segment sequence error"),
    Hl7ErrorCode.MISSING_FIELD: _Meaning(101, False, "Required field missing"),
    Hl7ErrorCode.INVALID_VALUE: _Meaning(102, False, "Data type error"),
    Hl7ErrorCode.STORAGE: _Meaning(207, False, "Application internal error"),
    Hl7ErrorCode.BROKER_REJECTED: _Meaning(207, False, "Application internal error"),
}

TABLE_0357_TEXT: dict[int, str] = {m.hl7_error: m.text for m in _MEANINGS.values()} | {
    201: "Unsupported event code",
    207: "Application internal error",
}


@dataclass(frozen=True)
class ErrorLocation:
    """ERR-2 (ERL): segment id, its 1-based occurrence, field and optional component."""

    segment: str
    sequence: int = 1
    field: int | None = None
    component: int | None = None

    def __str__(self) -> str:
        where = f"{self.segment}[{self.sequence}]"
        if self.field is not None:
            where += f"-{self.field}"
        if self.component is not None:
            where += f".{self.component}"
        return where


class Hl7MappingError(Exception):
    """An HL7 v2 message that cannot become FHIR; `code` says why, `detail` where.

    Details never quote field values: they may be identifiers or results (PHI).
    """

    def __init__(
        self,
        code: Hl7ErrorCode,
        detail: str,
        *,
        location: ErrorLocation | None = None,
        hl7_error: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.location = location
        self.hl7_error = hl7_error if hl7_error is not None else _MEANINGS[code].hl7_error

    @property
    def reject(self) -> bool:
        """True when the ACK should be AR/CR (unreadable or unsupported message)."""
        return _MEANINGS[self.code].reject
