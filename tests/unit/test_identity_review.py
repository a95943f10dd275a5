"""What ingest does with the matcher's answers for one record, and how operators name people."""

from __future__ import annotations

import pytest

from broker.domain.identity_review import best_per_person, explanation, parse_person, plan
from broker.domain.matching import Decision, FieldScore, MatchResult


def r(decision: Decision, total: float) -> MatchResult:
    return MatchResult(decision, total, (FieldScore("name", "exact", 15.5),), "missing", ())


def test_one_match_links_and_the_rest_is_reviewed() -> None:
    done = plan({"a": r(Decision.MATCH, 40), "b": r(Decision.POSSIBLE_MATCH, 14)})
    assert done.link == "a" and [p for p, _ in done.review] == ["b"]


def test_two_matches_link_nothing_and_both_are_reviewed() -> None:
    done = plan({"a": r(Decision.MATCH, 40), "b": r(Decision.MATCH, 30)})
    assert done.link is None and [p for p, _ in done.review] == ["a", "b"]


def test_no_match_is_dropped_and_reviews_are_bounded() -> None:
    many = {f"p{i}": r(Decision.POSSIBLE_MATCH, 12 + i) for i in range(9)}
    done = plan({**many, "z": r(Decision.NO_MATCH, 1)}, max_reviews=3)
    assert done.link is None and [p for p, _ in done.review] == ["p8", "p7", "p6"]


def test_the_best_record_speaks_for_a_person() -> None:
    best = best_per_person(
        [
            ("a", r(Decision.POSSIBLE_MATCH, 20)),
            ("a", r(Decision.MATCH, 26)),
            ("b", r(Decision.NO_MATCH, 3)),
        ]
    )
    assert best["a"].decision is Decision.MATCH and best["b"].total == 3


def test_explanations_hold_levels_and_weights_only() -> None:
    e = explanation(r(Decision.MATCH, 40))
    assert e["fields"] == [{"field": "name", "level": "exact", "weight": 15.5}]
    assert set(e) == {"decision", "total", "fields", "identifier", "hard_rules"}


def test_people_are_named_by_id_or_identifier() -> None:
    assert parse_person(" 5f0c ").person_id == "5f0c"
    ref = parse_person("urn:oid:2.16.156.10011.0.1.mrn|MRN-1", "H001")
    assert (ref.system, ref.value, ref.hospital) == (
        "urn:oid:2.16.156.10011.0.1.mrn",
        "MRN-1",
        "H001",
    )
    assert "MRN-1" not in str(ref)  # never the value in messages and logs
    for bad in ("", "|x", "sys|"):
        with pytest.raises(ValueError, match=r"person|SYSTEM"):
            parse_person(bad)
