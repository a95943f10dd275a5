"""Linking identifiers to people and merging people (broker/domain/linking.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.domain.linking import Link, link, redirect

JAN, FEB = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def test_unknown_identifiers_make_a_new_person_with_every_link() -> None:
    assert link(["a", "b", "a"], {}, {}) == Link(None, frozenset(), ("a", "b"))


def test_known_identifier_links_the_others_to_its_person() -> None:
    assert link(["a", "b"], {"a": "P1"}, {"P1": JAN}) == Link("P1", frozenset(), ("b",))


def test_identifiers_of_two_people_merge_them_into_the_oldest() -> None:
    found = link(["a", "b"], {"a": "P2", "b": "P1"}, {"P1": FEB, "P2": JAN})
    assert found == Link("P2", frozenset({"P1"}), ())


def test_every_worker_picks_the_same_survivor() -> None:
    """Equal ages (or none known): the smallest id, whatever the order of the identifiers."""
    known = {"a": "P9", "b": "P3", "c": "P5"}
    for order in (["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]):
        assert link(order, known, {}).person == "P3"
        assert link(order, known, dict.fromkeys(known.values(), JAN)).person == "P3"
    assert link(["a", "b"], known, {"P9": JAN}).person == "P9"  # a known age beats none


def test_merges_stay_one_step_deep() -> None:
    merges: dict[str, str] = {}
    redirect(merges, frozenset({"P2"}), "P1")
    redirect(merges, frozenset({"P1", "P3"}), "P0")
    assert merges == {"P1": "P0", "P2": "P0", "P3": "P0"}
