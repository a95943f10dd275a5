"""Linking identifiers to people and merging people (broker/domain/linking.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.domain.linking import Key, Link, conflict, gained, link, redirect

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


# conflict: a person never gains a second number of one national system.
RID, PERMIT = "urn:oid:2.16.156.10011.1.3", "urn:mrb:sid:hkmo-travel-permit"


def test_new_and_known_identifiers_of_one_person_do_not_conflict() -> None:
    assert conflict([[("a", RID), ("mrn", None)]], {}, {}) is None
    held = {"P1": {RID: {"a"}}}
    assert conflict([[("a", RID), ("mrn", None)]], {"a": "P1"}, held) is None
    assert conflict([[("mrn", None), ("pid", None)]], {"mrn": "P1"}, held) is None


def test_a_reused_hospital_identifier_does_not_give_its_person_a_second_number() -> None:
    """Patient.id "pid" was sent with resident ID a; now with b: another patient."""
    held = {"P1": {RID: {"a"}}}
    assert conflict([[("b", RID), ("pid", None)]], {"pid": "P1"}, held) == RID


def test_two_numbers_of_one_system_on_one_patient_conflict() -> None:
    assert conflict([[("a", RID), ("b", RID)]], {}, {}) == RID


def test_numbers_of_different_systems_may_join() -> None:
    held = {"P1": {RID: {"a"}}}
    assert conflict([[("x", PERMIT), ("mrn", None)]], {"mrn": "P1"}, held) is None


def test_a_merge_of_two_people_with_different_numbers_conflicts() -> None:
    known = {"mrn": "P1", "a": "P2"}
    held = {"P1": {RID: {"b"}}, "P2": {RID: {"a"}}}
    assert conflict([[("a", RID), ("mrn", None)]], known, held) == RID
    # The same merge with a person holding no resident ID is what merges are for.
    assert conflict([[("a", RID), ("mrn", None)]], known, {"P2": {RID: {"a"}}}) is None


def test_references_are_linked_in_order_within_one_message() -> None:
    """Neither reference conflicts with what is stored; the second with the first."""
    assert conflict([[("a", RID), ("pid", None)], [("b", RID), ("pid", None)]], {}, {}) == RID
    # ... and through a chain of merges: pid->a, then mrn->b, then pid+mrn.
    refs: list[list[Key]] = [
        [("a", RID), ("pid", None)],
        [("b", RID), ("mrn", None)],
        [("pid", None), ("mrn", None)],
    ]
    assert conflict(refs, {}, {}) == RID
    # Two patients in one message, each their own: no conflict.
    assert conflict([[("a", RID), ("p1", None)], [("b", RID), ("p2", None)]], {}, {}) is None


def test_a_person_linked_to_two_numbers_before_the_rule_keeps_them() -> None:
    held = {"P1": {RID: {"a", "b"}}}
    assert conflict([[("a", RID), ("pid", None)]], {"a": "P1", "pid": "P1"}, held) is None
    assert conflict([[("pid", None)]], {"pid": "P1"}, held) is None
    assert conflict([[("c", RID), ("pid", None)]], {"pid": "P1"}, held) == RID


def test_two_linked_groups_may_join_unless_they_hold_different_numbers() -> None:
    assert gained([{RID: {"a"}}, {RID: {"b"}}]) == RID
    assert gained([{RID: {"a"}}, {}]) is None
    assert gained([{RID: {"a"}}, {PERMIT: {"x"}}]) is None
    assert gained([{RID: {"a", "b"}}, {RID: {"a"}}]) is None  # held before the rule
    assert gained([{RID: {"a"}}], {RID: {"c"}}) == RID  # a number arriving on a message
