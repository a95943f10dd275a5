"""HL7 v2 acknowledgments: original mode (AA/AE/AR) and enhanced mode (CA/CE/CR, then
an application ACK AA/AE/AR as a separate message when MSH-16 asks for one).

HL7 v2.5 chapter 2.9: MSH-15 and MSH-16 both empty means original mode. In enhanced
mode table 0155 decides: AL always, NE never, ER only on error, SU only on success. An
empty MSH-15 next to a valued MSH-16 is read as AL (the sender is waiting on the
socket), an empty MSH-16 as NE.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from adapters.hl7v2.errors import TABLE_0357_TEXT, Hl7MappingError
from adapters.hl7v2.msh import DEFAULT_ENCODING_CHARS, MessageHeader


class AckCode(StrEnum):
    """HL7 table 0008."""

    AA = "AA"  # application accept
    AE = "AE"  # application error
    AR = "AR"  # application reject
    CA = "CA"  # commit accept: stored safely
    CE = "CE"  # commit error
    CR = "CR"  # commit reject


def wants(condition: str, *, success: bool) -> bool:
    """Table 0155: does an ACK of this condition (AL, NE, ER, SU) go out?"""
    return {"AL": True, "NE": False, "ER": not success, "SU": success}.get(condition, True)


@dataclass(frozen=True)
class AckOptions:
    """How our ACKs name us, and what to stamp them with (fixed values for tests)."""

    sending_application: str | None = None  # default: the message's MSH-5
    sending_facility: str | None = None  # default: the message's MSH-6
    control_id: str | None = None  # default: a fresh unique id
    now: datetime | None = None  # default: the current time


def accept_ack(
    header: MessageHeader | None,
    error: Hl7MappingError | None = None,
    options: AckOptions = AckOptions(),
) -> str | None:
    """The ACK to send at once on the same connection, or None when MSH-15 says not to.

    Original mode: AA, or AE/AR with ERR. Enhanced mode: CA once the message is stored,
    CE/CR with ERR when it was not.
    """
    if header is None or not header.enhanced_mode:
        code = AckCode.AA if error is None else (AckCode.AR if error.reject else AckCode.AE)
        return build_ack(header, code, error, options)
    if not wants(header.accept_ack_type or "AL", success=error is None):
        return None
    code = AckCode.CA if error is None else (AckCode.CR if error.reject else AckCode.CE)
    return build_ack(header, code, error, options)


def application_ack(
    header: MessageHeader,
    error: Hl7MappingError | None = None,
    options: AckOptions = AckOptions(),
) -> str | None:
    """Enhanced mode's later application ACK (AA/AE/AR), when MSH-16 asks for it.

    The caller decides when (e.g. once the broker's receipt says indexed or rejected)
    and sends it to the sender as a message of its own. Original mode: None (the
    immediate ACK already was the application ACK).
    """
    if not header.enhanced_mode or not wants(
        header.application_ack_type or "NE", success=error is None
    ):
        return None
    code = AckCode.AA if error is None else (AckCode.AR if error.reject else AckCode.AE)
    return build_ack(header, code, error, options)


def build_ack(
    header: MessageHeader | None,
    code: AckCode,
    error: Hl7MappingError | None = None,
    options: AckOptions = AckOptions(),
    *,
    text: str | None = None,
) -> str:
    """An ACK^R01^ACK for `header` (CR-separated text, ending with CR).

    MSH swaps sending and receiving application/facility (ours may be given), keeps the
    encoding characters, processing id, version and character set; MSA echoes MSH-10;
    ERR carries the table 0357 code, severity E and the detail (ERR-1 before v2.5).
    """
    h = header or MessageHeader(("MSH", "|", DEFAULT_ENCODING_CHARS))
    fs, enc = h.field_sep, h.encoding_chars
    version = _version(h.version)
    moment = options.now or datetime.now(UTC)
    ours_app, ours_facility = options.sending_application, options.sending_facility
    msh = [
        "MSH",
        enc,
        ours_app if ours_app is not None else h.get(5),
        ours_facility if ours_facility is not None else h.get(6),
        h.get(3),
        h.get(4),
        moment.strftime("%Y%m%d%H%M%S%z"),
        "",
        enc[0].join(("ACK", h.trigger_event or "R01", "ACK") if version >= (2, 3, 1) else ("ACK",)),
        options.control_id or f"ACK{uuid.uuid4().hex[:17].upper()}",
        h.get(11) or "P",
        h.get(12) or "2.5.1",
        "",
        "",
        "",
        "",
        "",
        h.get(18),
    ]
    message = _detail(error, text)
    segments = [
        _join(fs, msh),
        _join(fs, ["MSA", code.value, h.control_id, _escape(message, fs, enc)]),
    ]
    if error is not None:
        segments.append(_join(fs, _err(error, version, fs, enc)))
    return "".join(s + "\r" for s in segments)


def encode(ack: str, encoding: str) -> bytes:
    """The ACK in the sender's character set (unencodable characters become '?')."""
    return ack.encode(encoding, errors="replace")


def _detail(error: Hl7MappingError | None, text: str | None) -> str:
    if text is not None:
        return text
    return f"{error.code}: {error.detail}" if error is not None else ""


def _err(error: Hl7MappingError, version: tuple[int, ...], fs: str, enc: str) -> list[str]:
    comp, sub = enc[0], enc[3]
    label = TABLE_0357_TEXT.get(error.hl7_error, "Application error")
    loc = error.location
    if version < (2, 5):  # ERR-1 ELD: segment ^ sequence ^ field ^ code&text&HL70357
        where = [loc.segment, str(loc.sequence), str(loc.field or "")] if loc else ["", "", ""]
        return ["ERR", comp.join([*where, sub.join((str(error.hl7_error), label, "HL70357"))])]
    erl = ""
    if loc is not None:
        parts = [loc.segment, str(loc.sequence), str(loc.field or ""), "", str(loc.component or "")]
        erl = comp.join(parts).rstrip(comp)
    hl7_code = comp.join((str(error.hl7_error), label, "HL70357"))
    detail = _escape(f"{error.code}: {error.detail}", fs, enc)
    return ["ERR", "", erl, hl7_code, "E", "", "", "", detail]


def _escape(text: str, fs: str, enc: str) -> str:
    """HL7 escape (2.7.4) of free text, one line."""
    comp, rep, esc, sub = enc[0], enc[1], enc[2], enc[3]
    out = text.replace(esc, f"{esc}E{esc}")
    for char, letter in ((fs, "F"), (comp, "S"), (rep, "R"), (sub, "T")):
        out = out.replace(char, f"{esc}{letter}{esc}")
    return " ".join(out.split())


def _join(fs: str, fields: list[str]) -> str:
    while fields and not fields[-1]:
        fields.pop()
    if fields[0] == "MSH":  # MSH-1 is the separator itself: MSH|^~\&|...
        return "MSH" + fs + fs.join(fields[1:])
    return fs.join(fields)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(".")) if text else (2, 5)
    except ValueError:
        return (2, 5)
