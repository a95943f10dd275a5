"""The bench's 500-vs-10-results figure compares two checks of the same item: only the
number of results differs (an item with age bands also reads the birth date)."""

from __future__ import annotations

from benchmarks.check_bench import BIG, check_body, same_recent_code
from benchmarks.config import BenchConfig
from broker.demo import synthetic_index as synth


def test_the_ten_results_patient_asks_for_the_big_patients_item() -> None:
    cfg = BenchConfig()
    twin = same_recent_code(BIG, 200)
    assert 0 <= twin < 200
    assert synth.recent_code(twin) == synth.recent_code(BIG)
    items = [check_body(n, cfg, hit=True)["items"] for n in (twin, BIG)]
    assert items[0] == items[1]


def test_without_such_a_person_the_first_is_taken() -> None:
    assert same_recent_code(BIG, 0) == 0
