"""DICOM DA, TM and UTC offset values (PS3.5 6.2) as Python dates and aware datetimes.

Old ACR-NEMA style values (1997.04.24, 14:04:38) are still sent by some modalities and
are read too; anything else is treated as absent rather than guessed.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone, tzinfo

_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")
# Birth dates before this are placeholders (e.g. 11111111), not people.
_EARLIEST_BIRTH = date(1900, 1, 1)


def parse_date(value: str | None) -> date | None:
    """A DA value (YYYYMMDD, or the ACR-NEMA YYYY.MM.DD), else None."""
    match = _DA.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_time(value: str | None) -> time | None:
    """A TM value (HH, HHMM, HHMMSS.FFFFFF, or HH:MM:SS), else None."""
    match = _TM.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    hour, minute, second = int(match[1]), int(match[2] or 0), int(match[3] or 0)
    micro = int((match[4] or "0").ljust(6, "0"))
    try:
        return time(hour, minute, min(second, 59), micro)  # 60: a leap second
    except ValueError:
        return None


def utc_offset(value: str | None) -> timezone | None:
    """Timezone Offset From UTC (0008,0201), e.g. +0800, else None."""
    match = _OFFSET.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    delta = timedelta(hours=int(match[2]), minutes=int(match[3]))
    if delta > timedelta(hours=14):
        return None
    return timezone(-delta if match[1] == "-" else delta)


def combine(da: str | None, tm: str | None, zone: tzinfo) -> datetime | date | None:
    """A date with its time in `zone` (aware), the date alone without a time, or None."""
    day = parse_date(da)
    if day is None:
        return None
    clock = parse_time(tm)
    if clock is None:
        return day
    return datetime.combine(day, clock, tzinfo=zone)


def birth_date(value: str | None) -> date | None:
    """Patient's Birth Date (0010,0030); placeholders before 1900 are dropped."""
    day = parse_date(value)
    return day if day is not None and day >= _EARLIEST_BIRTH else None
