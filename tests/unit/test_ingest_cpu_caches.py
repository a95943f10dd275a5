"""The shortcuts that cut ingest's CPU give what the longer ways gave (issue #16)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, date, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from broker.domain.demographics import Demographics
from broker.fhir import dates
from broker.fhir.dates import DateError, Range, effective_range, parse_range, period_range
from broker.ingest.fhir_bundle import BundleIndex, Entry
from broker.security.payload_cipher import PayloadCipher
from broker.storage.demographics import open_sealed, plaintext, seal

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
PLUS_5 = timezone(timedelta(hours=5))

VALUES = [
    "2026",
    "2026-02",
    "2026-12",
    "2024-02-29",
    "2026-05-18",
    "2026-05-18T08:30",
    "2026-05-18T08:30:00",
    "2026-05-18T08:30:00.5",
    "2026-05-18T08:30:00.123456789",
    "2026-05-18T08:30:00Z",
    "2026-05-18T08:30:00+08:00",
    "2026-05-18T08:30:00-05:00",
    "2026-05-18T08:30:00 08:00",  # '+' unencoded in a query
    " 2026-05-18 ",
    "9999",
    "9999-12-31T23:59:59.9999999Z",
    "0001-01-01T00:00:00+14:00",
]


def uncached(text: str, zone: object) -> Range:
    return dates._parse_range.__wrapped__(text, zone)


@pytest.mark.parametrize("text", VALUES)
@pytest.mark.parametrize("zone", [UTC, SHANGHAI, NEW_YORK, PLUS_5])
def test_cached_ranges_are_the_parsed_ones(text: str, zone: timezone) -> None:
    dates._parse_range.cache_clear()
    first = parse_range(text, zone)
    assert first == uncached(text, zone)
    assert parse_range(text, zone) == first  # from the cache now


def test_the_zone_is_part_of_the_key() -> None:
    dates._parse_range.cache_clear()
    in_shanghai = parse_range("2026-05-18T08:30", SHANGHAI)
    in_new_york = parse_range("2026-05-18T08:30", NEW_YORK)
    assert in_new_york.low - in_shanghai.low == timedelta(hours=12)
    # A value with its own offset names the same instants in any zone.
    assert parse_range("2026-05-18T08:30Z", SHANGHAI) == parse_range("2026-05-18T08:30Z", UTC)


@pytest.mark.parametrize(
    "text", ["2026-13", "2026-02-30", "2026-05-18T25:00", "18/05/2026", "2026-05-18T08:30+15:00"]
)
def test_a_refused_value_is_refused_every_time(text: str) -> None:
    for _ in range(2):  # exceptions are not cached, and not turned into a value
        with pytest.raises(DateError):
            parse_range(text, SHANGHAI)


def test_periods_and_effective_values_use_the_same_ranges() -> None:
    dates._parse_range.cache_clear()
    period = {"start": "2026-05", "end": "2026-05-18T08:30:00+08:00"}
    expected = Range(
        uncached("2026-05", SHANGHAI).low, uncached("2026-05-18T08:30:00+08:00", SHANGHAI).high
    )
    for _ in range(2):
        assert period_range(period, SHANGHAI) == expected
        assert effective_range({"effectivePeriod": period}, SHANGHAI) == expected
    assert period_range({"end": "2026"}, SHANGHAI) == Range(
        dates.LOWEST, uncached("2026", SHANGHAI).high
    )
    assert effective_range({"effectiveDateTime": "not a date"}, SHANGHAI) is None


DEMOGRAPHICS = [
    Demographics(),
    Demographics(
        family="张",
        given="伟",
        sex="male",
        birth_date=date(1980, 2, 29),
        phone="+86 138 0000 0000",
        address='北京市 "东城区"\n1号',
        identifiers=(("urn:oid:2.16.156.10011.1.2", "national|x"), ("s", "v")),
    ),
    Demographics(full_name="ZHANG WEI", sex="M"),
]


@pytest.mark.parametrize("d", DEMOGRAPHICS)
def test_sealed_demographics_are_the_bytes_asdict_gave(d: Demographics) -> None:
    """Stored rows are compared byte for byte with what a batch would seal: the bytes
    must not move (a change would re-seal every stored record once)."""
    before = asdict(d)
    before["birth_date"] = d.birth_date.isoformat() if d.birth_date else None
    assert plaintext(d) == json.dumps(before, ensure_ascii=False).encode()


def test_sealed_demographics_open_to_what_was_sealed() -> None:
    cipher = PayloadCipher({"k1": bytes(range(32))}, "k1")
    d = DEMOGRAPHICS[1]
    assert open_sealed(cipher, "p", "H001", seal(cipher, "p", "H001", d)) == d


def test_resources_of_a_type_come_in_bundle_order() -> None:
    obs = [{"resourceType": "Observation", "id": str(i)} for i in range(3)]
    patient = {"resourceType": "Patient", "id": "p"}
    odd = {"resourceType": ["Observation"], "id": "x"}  # not a name: of no type
    index = BundleIndex([Entry(r, None) for r in (obs[0], patient, obs[1], odd, obs[2])])
    assert index.of_type("Observation") == obs
    assert index.of_type("Patient") == [patient]
    assert index.of_type("Specimen") == []
    index.of_type("Observation").clear()  # a caller's list is its own
    assert index.of_type("Observation") == obs
    assert index.resolve("Observation/1") is obs[1]
