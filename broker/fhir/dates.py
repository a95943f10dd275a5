"""FHIR date search: values as ranges, prefixes as relations between ranges.

FHIR R4 search (3.1.1.4.2 date, 3.1.1.4.1 prefixes): a date of partial precision
stands for the whole range it names (`2026-05` is all of May), and so does a resource's
value (an `effectivePeriod` is its start to its end, open-ended when one is missing).
Ranges here are half-open, [low, high), in UTC. One definition of each prefix
(`relation`) is evaluated either in Python (`matches`, for the unit tests and for
reading) or as SQL (broker.fhir.search), so both always agree.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Protocol, TypeVar

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
LOWEST = datetime(1, 1, 1, tzinfo=UTC)  # an open start (effectivePeriod without start)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)  # an open end
APPROXIMATION = 0.1  # `ap`: 10% of the gap between now and the date (the spec's advice)

# YYYY[-MM[-DD[Thh:mm[:ss[.f]][zone]]]]; a '+' sent unencoded in a query arrives as ' '.
_VALUE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+\- ]\d{2}:\d{2})?)?)?)?"
)


class DateError(ValueError):
    """A value that is not a FHIR date, dateTime or instant (the message says why)."""


@dataclass(frozen=True)
class Range:
    """The instants [low, high) a value stands for, in UTC."""

    low: datetime
    high: datetime


@dataclass(frozen=True)
class DateValue:
    """One value of a date search parameter: its prefix and the range it names.

    For `ap` the range is already widened by the approximation.
    """

    prefix: str
    range: Range


def parse_range(text: str, zone: tzinfo) -> Range:
    """The range a FHIR date/dateTime/instant names; a value without a zone takes `zone`."""
    return _parse_range(text, zone)


# The Observations of one report mostly share their effective time, and a batch indexes
# hundreds of them: each distinct (text, zone) is parsed once. Ranges are immutable; a
# refused value raises each time (exceptions are not cached).
@functools.lru_cache(maxsize=4096)
def _parse_range(text: str, zone: tzinfo) -> Range:
    m = _VALUE.fullmatch(text.strip())
    if m is None:
        raise DateError(
            f"{text[:40]!r} is not a FHIR date: use YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm]"
        )
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    if offset is not None:
        tz: tzinfo = UTC if offset == "Z" else _offset(offset)
    else:
        tz = zone
    try:
        if month is None:
            low = datetime(int(year), 1, 1, tzinfo=tz)
            return _range(low, lambda: datetime(int(year) + 1, 1, 1, tzinfo=tz))
        if day is None:
            y, mo = int(year), int(month)
            low = datetime(y, mo, 1, tzinfo=tz)
            nxt = (y + 1, 1) if mo == 12 else (y, mo + 1)
            return _range(low, lambda: datetime(nxt[0], nxt[1], 1, tzinfo=tz))
        if hour is None:
            low = datetime(int(year), int(month), int(day), tzinfo=tz)
            return _range(low, lambda: low + timedelta(days=1))
        digits = fraction or ""
        micro = int((digits + "000000")[:6])
        low = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError as exc:
        raise DateError(f"{text[:40]!r} is not a valid date: {exc}") from None
    if second is None:
        step = timedelta(minutes=1)
    elif not digits:
        step = timedelta(seconds=1)
    else:
        step = max(timedelta(microseconds=1), timedelta(seconds=10 ** -len(digits)))
    return _range(low, lambda: low + step)


def parse_value(text: str, zone: tzinfo, now: datetime) -> DateValue:
    """One search value with its optional prefix (`ge2026-05`, `2026-05-18`)."""
    raw = text.strip()
    prefix = "eq"
    if raw[:2].isalpha():
        prefix, raw = raw[:2], raw[2:]
        if prefix not in PREFIXES:
            raise DateError(f"unknown date prefix {prefix!r}: use one of {', '.join(PREFIXES)}")
    named = parse_range(raw, zone)
    if prefix == "ap":
        named = approximate(named, now)
    return DateValue(prefix, named)


def approximate(named: Range, now: datetime) -> Range:
    """The range widened on both sides by 10% of the gap between now and the value."""
    gap = abs(now - named.low)
    margin = gap * APPROXIMATION
    try:
        low = named.low - margin
    except OverflowError:
        low = LOWEST
    try:
        high = named.high + margin
    except OverflowError:
        high = HIGHEST
    return Range(max(low, LOWEST), min(high, HIGHEST))


def value_range(value: object, zone: tzinfo) -> Range | None:
    """The range of a resource's dateTime or instant element (None when absent or invalid)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_range(value, zone)
    except DateError:
        return None


def period_range(period: object, zone: tzinfo) -> Range | None:
    """The range of a Period: start to end, an open side reaching to the end of time."""
    if not isinstance(period, dict):
        return None
    start = value_range(period.get("start"), zone)
    end = value_range(period.get("end"), zone)
    if start is None and end is None:
        return None
    return Range(start.low if start else LOWEST, end.high if end else HIGHEST)


def effective_range(resource: dict[str, Any], zone: tzinfo) -> Range | None:
    """The range of `effective[x]` (dateTime, Period or instant; Timing is not searched)."""
    if "effectiveDateTime" in resource:
        return value_range(resource["effectiveDateTime"], zone)
    if "effectivePeriod" in resource:
        return period_range(resource["effectivePeriod"], zone)
    if "effectiveInstant" in resource:
        return value_range(resource["effectiveInstant"], zone)
    return None


V = TypeVar("V")  # a range endpoint of the target: a datetime, or a column
V_contra = TypeVar("V_contra", contravariant=True)
B = TypeVar("B")  # a truth value: a bool, or an SQL condition


class Relations(Protocol[V_contra, B]):
    """Comparisons of a target's endpoint with a fixed instant, and their combinations."""

    def before(self, v: V_contra, t: datetime) -> B: ...  # v < t

    def not_after(self, v: V_contra, t: datetime) -> B: ...  # v <= t

    def after(self, v: V_contra, t: datetime) -> B: ...  # v > t

    def not_before(self, v: V_contra, t: datetime) -> B: ...  # v >= t

    def all_of(self, *conditions: B) -> B: ...

    def any_of(self, *conditions: B) -> B: ...

    def negate(self, condition: B) -> B: ...


def relation(value: DateValue, low: V, high: V, ops: Relations[V, B]) -> B:
    """Whether the target range [low, high) stands in `value.prefix` relation to the value.

    The wording of each case is the R4 specification's.
    """
    p = value.range
    # the range of the search value fully contains the range of the target value
    contained = ops.all_of(ops.not_before(low, p.low), ops.not_after(high, p.high))
    match value.prefix:
        case "eq":
            return contained
        case "ne":  # the range of the search value does not fully contain the target's
            return ops.negate(contained)
        case "gt":  # the range above the search value intersects the target's
            return ops.after(high, p.high)
        case "lt":  # the range below the search value intersects the target's
            return ops.before(low, p.low)
        case "ge":  # gt, or the search range fully contains the target's
            return ops.any_of(ops.after(high, p.high), contained)
        case "le":  # lt, or the search range fully contains the target's
            return ops.any_of(ops.before(low, p.low), contained)
        case "sa":  # no overlap, and the range above the search value contains the target
            return ops.not_before(low, p.high)
        case "eb":  # no overlap, and the range below the search value contains the target
            return ops.not_after(high, p.low)
        case "ap":  # the (widened) search range overlaps the target's
            return ops.all_of(ops.before(low, p.high), ops.after(high, p.low))
    raise DateError(f"unknown date prefix {value.prefix!r}")


class _PythonRelations:
    def before(self, v: datetime, t: datetime) -> bool:
        return v < t

    def not_after(self, v: datetime, t: datetime) -> bool:
        return v <= t

    def after(self, v: datetime, t: datetime) -> bool:
        return v > t

    def not_before(self, v: datetime, t: datetime) -> bool:
        return v >= t

    def all_of(self, *conditions: bool) -> bool:
        return all(conditions)

    def any_of(self, *conditions: bool) -> bool:
        return any(conditions)

    def negate(self, condition: bool) -> bool:
        return not condition


def matches(value: DateValue, target: Range | None) -> bool:
    """Whether a resource whose value is `target` matches; a resource without one never does."""
    if target is None:
        return False
    return relation(value, target.low, target.high, _PythonRelations())


def _offset(text: str) -> tzinfo:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise DateError(f"time zone offset {text!r} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _range(low: datetime, high: Any) -> Range:
    """[low, high()) in UTC; a high beyond year 9999 becomes the end of time."""
    try:
        start = low.astimezone(UTC)
    except OverflowError:
        start = LOWEST
    try:
        end: datetime = high().astimezone(UTC)
    except (OverflowError, ValueError):
        end = HIGHEST
    return Range(start, min(end, HIGHEST))
