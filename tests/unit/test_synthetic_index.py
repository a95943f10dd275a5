"""The bench's synthetic messages are what ingest itself makes of them: `mrb bench load`
writes the generator's ParsedMessage, so it must equal `parse_message` of the bytes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broker.demo import synthetic_index as synth
from broker.domain.identifiers import validate_resident_id
from broker.ingest.parse import parse_message

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=SHANGHAI)


@pytest.mark.parametrize("number", [0, 7, 12_345, 9_999_999])
def test_generated_results_equal_what_ingest_parses(number: int) -> None:
    messages = synth.person_messages(number, 10, NOW)
    assert {m.hospital for m in messages} == {synth.RECENT_HOSPITAL, synth.OTHER_HOSPITAL}
    for m in messages:
        parsed = parse_message(m.value, hospital=m.hospital, zone=SHANGHAI)
        assert parsed == m.parsed


def test_people_are_unique_and_valid_and_hits_are_known() -> None:
    ids = {synth.national_id(n) for n in range(0, 3_000_000, 997)}
    assert len(ids) == len(range(0, 3_000_000, 997))
    for n in (0, 1, 999, 1000, 29_999_999):
        assert validate_resident_id(synth.national_id(n)) == synth.national_id(n)
    codes = {
        c.code
        for m in synth.person_messages(42, 10, NOW)
        for r in m.parsed.results
        for i in r.items
        for c in i.codings
    }
    assert synth.recent_code(42) in codes
    assert synth.missing_code(42, 10) not in codes
    recent = [
        r.effective
        for m in synth.person_messages(42, 10, NOW)
        for r in m.parsed.results
        if r.effective is not None and (NOW - r.effective).days < 7
    ]
    assert len(recent) == 1
