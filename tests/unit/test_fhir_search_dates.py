"""FHIR date search: partial dates as ranges, zones, and every prefix's range relation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from broker.fhir.dates import (
    HIGHEST,
    LOWEST,
    DateError,
    DateValue,
    Range,
    effective_range,
    matches,
    parse_range,
    parse_value,
    period_range,
)

CST = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone(timedelta(hours=8))).astimezone(UTC)


def rng(text: str) -> Range:
    return parse_range(text, CST)


def match(param: str, target: str | Range | None) -> bool:
    value = parse_value(param, CST, NOW)
    return matches(value, rng(target) if isinstance(target, str) else target)


class TestValuesAreRanges:
    def test_a_year_is_the_whole_year_in_the_servers_zone(self) -> None:
        assert rng("2026") == Range(cst(2026, 1, 1), cst(2027, 1, 1))

    def test_a_month_is_the_whole_month(self) -> None:
        assert rng("2026-05") == Range(cst(2026, 5, 1), cst(2026, 6, 1))
        assert rng("2026-12") == Range(cst(2026, 12, 1), cst(2027, 1, 1))
        assert rng("2024-02").high - rng("2024-02").low == timedelta(days=29)

    def test_a_day_is_the_whole_day(self) -> None:
        assert rng("2026-05-18") == Range(cst(2026, 5, 18), cst(2026, 5, 19))

    def test_times_at_each_precision(self) -> None:
        assert rng("2026-05-18T08:30") == Range(cst(2026, 5, 18, 8, 30), cst(2026, 5, 18, 8, 31))
        at = cst(2026, 5, 18, 8, 30, 5)
        assert rng("2026-05-18T08:30:05+08:00") == Range(at, at + timedelta(seconds=1))
        assert rng("2026-05-18T08:30:05.12+08:00") == Range(
            at + timedelta(milliseconds=120), at + timedelta(milliseconds=130)
        )
        assert rng("2026-05-18T08:30:05.123456789Z").high - rng(
            "2026-05-18T08:30:05.123456789Z"
        ).low == timedelta(microseconds=1)

    def test_zones(self) -> None:
        assert rng("2026-05-18T00:30:00Z").low == datetime(2026, 5, 18, 0, 30, tzinfo=UTC)
        assert rng("2026-05-18T00:30:00-05:00").low == datetime(2026, 5, 18, 5, 30, tzinfo=UTC)
        # A '+' sent unencoded in a query string arrives as a space.
        assert rng("2026-05-18T08:30:00 08:00") == rng("2026-05-18T08:30:00+08:00")
        # Without a zone, the zone given (the server's, or the hospital's for a resource).
        assert parse_range("2026-05-18", UTC).low == datetime(2026, 5, 18, tzinfo=UTC)

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "26",
            "2026-13",
            "2026-02-30",
            "2026-05-18T25:00",
            "2026/05/18",
            "May 2026",
            "2026-05-18T08:30:00+15:00",
            "2026-05-18T08",
        ],
    )
    def test_invalid_values_are_refused(self, bad: str) -> None:
        with pytest.raises(DateError):
            rng(bad)

    def test_the_end_of_time_does_not_overflow(self) -> None:
        assert rng("9999").high == HIGHEST
        assert rng("9999-12-31").high == HIGHEST
        assert rng("0001").low == LOWEST


class TestResourceValues:
    def test_a_period_is_its_start_to_its_end(self) -> None:
        period = {"start": "2026-05-10", "end": "2026-05-12T10:00:00+08:00"}
        assert period_range(period, CST) == Range(cst(2026, 5, 10), cst(2026, 5, 12, 10, 0, 1))

    def test_an_open_period_reaches_the_end_of_time(self) -> None:
        assert period_range({"start": "2026-05-10"}, CST) == Range(cst(2026, 5, 10), HIGHEST)
        assert period_range({"end": "2026-05-10"}, CST) == Range(LOWEST, cst(2026, 5, 11))
        assert period_range({}, CST) is None

    def test_effective_x(self) -> None:
        assert effective_range({"effectiveDateTime": "2026-05"}, CST) == rng("2026-05")
        assert effective_range({"effectiveInstant": "2026-05-18T00:00:00Z"}, CST) == rng(
            "2026-05-18T00:00:00Z"
        )
        assert effective_range({"effectivePeriod": {"start": "2026"}}, CST) == Range(
            cst(2026, 1, 1), HIGHEST
        )
        assert effective_range({"effectiveTiming": {}}, CST) is None
        assert effective_range({"effectiveDateTime": "garbage"}, CST) is None


class TestPrefixes:
    def test_prefixes_are_read_and_default_to_eq(self) -> None:
        assert parse_value("2026-05", CST, NOW).prefix == "eq"
        assert parse_value("ge2026-05", CST, NOW) == DateValue("ge", rng("2026-05"))
        with pytest.raises(DateError, match="unknown date prefix"):
            parse_value("xx2026", CST, NOW)

    def test_eq_the_search_range_contains_the_target(self) -> None:
        assert match("2026-05", "2026-05-18T08:30:00+08:00")
        assert match("2026-05", "2026-05-31")
        assert match("eq2026", "2026-05")
        assert not match("2026-05", "2026-06-01T00:00:00+08:00")
        assert not match("2026-05-18", "2026-05")  # the target is wider than the day
        assert not match("2026-05", Range(cst(2026, 4, 30), cst(2026, 5, 2)))  # overlaps only

    def test_ne_is_not_eq(self) -> None:
        assert match("ne2026-05", "2026-06-02")
        assert not match("ne2026-05", "2026-05-18")
        assert match("ne2026-05-18", "2026-05")

    def test_gt_the_range_above_intersects(self) -> None:
        assert match("gt2026-05", "2026-06-01")
        assert not match("gt2026-05", "2026-05-31T23:59:59+08:00")
        assert match("gt2026-05", Range(cst(2026, 5, 20), cst(2026, 6, 3)))  # reaches past May
        assert match("gt2026-05", Range(cst(2026, 5, 1), HIGHEST))  # ongoing

    def test_lt_the_range_below_intersects(self) -> None:
        assert match("lt2026-05", "2026-04-30")
        assert not match("lt2026-05", "2026-05-01")
        assert match("lt2026-05", Range(cst(2026, 4, 30), cst(2026, 5, 3)))

    def test_ge_and_le_include_the_value_itself(self) -> None:
        assert match("ge2026-05", "2026-05-01")
        assert match("ge2026-05", "2026-07")
        assert not match("ge2026-05", "2026-04-30")
        assert match("le2026-05", "2026-05-31")
        assert match("le2026-05", "2026-01")
        assert not match("le2026-05", "2026-06-01")
        # A day at the edges of a datetime value: gt/lt miss, ge/le hit.
        assert not match("gt2026-05-18T08:30:00+08:00", "2026-05-18T08:30:00+08:00")
        assert match("ge2026-05-18T08:30:00+08:00", "2026-05-18T08:30:00+08:00")

    def test_sa_starts_after_and_eb_ends_before_with_no_overlap(self) -> None:
        assert match("sa2026-05", "2026-06-01")
        assert not match("sa2026-05", Range(cst(2026, 5, 31), cst(2026, 6, 2)))
        assert match("eb2026-05", "2026-04-30")
        assert not match("eb2026-05", Range(cst(2026, 4, 30), cst(2026, 5, 2)))
        assert not match("eb2026-05", Range(LOWEST, cst(2026, 5, 1, 0, 0, 1)))

    def test_ap_is_within_ten_percent_of_the_gap_to_now(self) -> None:
        # 2026-01-01 is 151 days before NOW: about 15 days either side is "approximately".
        assert match("ap2026-01-01", "2026-01-14")
        assert match("ap2026-01-01", "2025-12-20")
        assert not match("ap2026-01-01", "2026-01-20")
        # A value close to now is approximately only itself.
        assert match("ap2026-06-01", "2026-06-01T10:00:00+08:00")
        assert not match("ap2026-06-01", "2026-06-03")

    def test_a_resource_without_a_value_matches_nothing(self) -> None:
        for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"):
            assert not match(f"{prefix}2026", None)
