"""Version ordering of one result: latest source time wins, replays change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import permutations

from hypothesis import given
from hypothesis import strategies as st

from broker.domain.versions import StoredVersion, VersionKey, VersionOutcome, place_version

T0 = datetime(2026, 5, 18, 8, 0, tzinfo=UTC)


def key(minutes: int | None, version: str | None = None) -> VersionKey:
    return VersionKey.of(T0 + timedelta(minutes=minutes) if minutes is not None else None, version)


def replay(arrivals: list[tuple[VersionKey, str]]) -> str:
    """Apply arrivals in order; return the content hash that ends current."""
    stored: list[StoredVersion] = []
    for k, h in arrivals:
        outcome = place_version(k, h, stored)
        if outcome is VersionOutcome.DUPLICATE:
            continue
        if outcome is VersionOutcome.CURRENT:
            stored = [StoredVersion(s.key, s.content_hash, False) for s in stored]
        stored.append(StoredVersion(k, h, outcome is VersionOutcome.CURRENT))
    return next(s.content_hash for s in stored if s.is_current)


class TestVersionKey:
    def test_later_source_time_is_greater(self) -> None:
        assert key(0) < key(1)

    def test_version_id_breaks_a_tie_in_time_numerically(self) -> None:
        assert key(0, "2") < key(0, "10")  # numeric, not lexical

    def test_time_beats_version_id(self) -> None:
        assert key(0, "9") < key(1, "1")

    def test_a_stated_time_beats_none(self) -> None:
        assert key(None, "5") < key(0)

    def test_non_numeric_version_id_sorts_before_numeric(self) -> None:
        assert VersionKey.of(T0, "abc") < VersionKey.of(T0, "1")

    def test_same_instant_in_another_zone_is_equal(self) -> None:
        other = T0.astimezone(timezone(timedelta(hours=8)))
        assert not VersionKey.of(T0, "1") < VersionKey.of(other, "1")
        assert not VersionKey.of(other, "1") < VersionKey.of(T0, "1")


class TestPlaceVersion:
    def test_first_version_is_current(self) -> None:
        assert place_version(key(0), "a", []) is VersionOutcome.CURRENT

    def test_same_content_is_a_duplicate_even_with_another_key(self) -> None:
        stored = [StoredVersion(key(0), "a", True)]
        assert place_version(key(5), "a", stored) is VersionOutcome.DUPLICATE

    def test_older_version_arriving_late_is_superseded(self) -> None:
        stored = [StoredVersion(key(10), "amended", True)]
        assert place_version(key(0), "original", stored) is VersionOutcome.SUPERSEDED

    def test_newer_version_becomes_current(self) -> None:
        stored = [StoredVersion(key(0), "original", True)]
        assert place_version(key(10), "amended", stored) is VersionOutcome.CURRENT

    def test_exact_tie_with_new_content_goes_to_the_later_arrival(self) -> None:
        stored = [StoredVersion(key(0), "a", True)]
        assert place_version(key(0), "b", stored) is VersionOutcome.CURRENT

    def test_amended_then_cancelled_in_any_order_ends_cancelled(self) -> None:
        arrivals = [(key(0, "1"), "final"), (key(5, "2"), "amended"), (key(9, "3"), "cancelled")]
        for order in permutations(arrivals):
            assert replay(list(order)) == "cancelled"

    @given(
        st.lists(
            st.tuples(st.integers(0, 10_000), st.integers(1, 50)),
            min_size=1,
            max_size=8,
            unique=True,
        ),
        st.randoms(),
    )
    def test_arrival_order_never_changes_the_winner(
        self, versions: list[tuple[int, int]], rnd: object
    ) -> None:
        arrivals = [(key(m, str(v)), f"h{m}-{v}") for m, v in versions]
        expected = replay(sorted(arrivals, key=lambda a: a[0].sort_tuple()))
        shuffled = arrivals[:]
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert replay(shuffled + shuffled) == expected  # replays included


class TestHashForms:
    """Versions stored under the earlier hash form are still recognised as replays."""

    LEGACY = "a" * 64  # an earlier form: 64 hex digits
    NEW = "o" + "b" * 63

    def test_a_replay_of_a_version_stored_under_the_earlier_hash_is_a_duplicate(self) -> None:
        stored = [StoredVersion(key(0), self.LEGACY, True)]
        asked: list[bool] = []

        def earlier() -> str:
            asked.append(True)
            return self.LEGACY

        assert place_version(key(0), self.NEW, stored, earlier) is VersionOutcome.DUPLICATE
        assert asked == [True]

    def test_the_earlier_hash_is_computed_only_when_such_a_version_is_stored(self) -> None:
        def never() -> str:
            raise AssertionError("computed although no version has the earlier form")

        stored = [StoredVersion(key(0), "o" + "c" * 63, True)]
        assert place_version(key(1), self.NEW, stored, never) is VersionOutcome.CURRENT

    def test_different_content_under_either_form_is_a_new_version(self) -> None:
        stored = [StoredVersion(key(0), self.LEGACY, True)]
        assert place_version(key(1), self.NEW, stored, lambda: "d" * 64) is VersionOutcome.CURRENT
