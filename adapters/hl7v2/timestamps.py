"""HL7 v2 DTM/TS/DT values as FHIR date, dateTime and instant strings.

DTM is YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]. FHIR needs seconds and a zone
whenever a time is present, so a time without an offset takes the interface's zone
(DESIGN.md: times without a zone take the sending hospital's configured zone) and
hour or minute precision is padded with zeros. Precision is otherwise kept. ISO-style
text ("2023-05-01 08:30:00", sent by some LIS in TS fields) is read as the same DTM.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo

_DTM = re.compile(
    r"(?P<date>\d{4}(?:\d{2}(?:\d{2})?)?)"
    r"(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,4})?)?)?)?"
    r"(?P<zone>[+-]\d{4})?"
)
# "2023-05-01 08:30:00": ISO-style text some Chinese LIS put in TS fields.
_ISO_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,4})?)?)?")


class Hl7TimeError(ValueError):
    """A value that is not an HL7 v2 date/time."""


def _match(value: str) -> re.Match[str]:
    text = value.strip()
    if _ISO_LIKE.fullmatch(text):
        text = re.sub(r"[-: T]", "", text)
    found = _DTM.fullmatch(text)
    if found is None:
        raise Hl7TimeError("not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    return found


def _offset(zone: str) -> timezone:
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    if hours > 14 or minutes > 59:
        raise Hl7TimeError("time zone offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def to_datetime(value: str, zone: tzinfo) -> datetime:
    """The instant a DTM names (start of the period for date-only values)."""
    m = _match(value)
    d, t = m["date"], m["time"] or ""
    try:
        moment = datetime(
            int(d[:4]),
            int(d[4:6] or 1),
            int(d[6:8] or 1),
            int(t[:2] or 0),
            int(t[2:4] or 0),
            int(t[4:6] or 0),
            int((t[7:] or "0").ljust(6, "0")),
        )
    except ValueError:
        raise Hl7TimeError("date/time out of range") from None
    return moment.replace(tzinfo=_offset(m["zone"]) if m["zone"] else zone)


def fhir_datetime(value: str, zone: tzinfo) -> str:
    """FHIR dateTime: a date keeps its precision, a time gets seconds and a zone."""
    m = _match(value)
    if not m["time"]:
        d = m["date"]
        _check_date(d)
        return "-".join(p for p in (d[:4], d[4:6], d[6:8]) if p)
    return _instant_text(m, to_datetime(value, zone))


def fhir_instant(value: str, zone: tzinfo) -> str:
    """FHIR instant: always to the second and zoned (a date-only value means its midnight)."""
    m = _match(value)
    return _instant_text(m, to_datetime(value, zone))


def fhir_date(value: str) -> str:
    """FHIR date (birth dates): the date part only, whatever time follows it."""
    m = _match(value)
    d = m["date"]
    _check_date(d)
    return "-".join(p for p in (d[:4], d[4:6], d[6:8]) if p)


def _check_date(d: str) -> None:
    try:
        date(int(d[:4]), int(d[4:6] or 1), int(d[6:8] or 1))
    except ValueError:
        raise Hl7TimeError("date out of range") from None


def _instant_text(m: re.Match[str], moment: datetime) -> str:
    t = m["time"] or ""
    fraction = t[6:] if len(t) > 6 else ""  # ".S" to ".SSSS" as sent
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{moment:%Y-%m-%dT%H:%M:%S}{fraction}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
