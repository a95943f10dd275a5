"""Web login rules as pure functions (broker/domain/sessions.py) and the secrets of a
session (broker/security/passwords.py): password policy, lockout arithmetic, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.sessions import (
    Failures,
    LockoutPolicy,
    SessionPolicy,
    after_failure,
    check_password,
    check_username,
    just_locked,
    needs_touch,
    session_alive,
    session_expires_at,
)
from broker.security.passwords import (
    csrf_matches,
    csrf_token,
    generate_password,
    hash_password,
    new_session_id,
    session_id_hash,
    verify_password,
)

T0 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("dr.li", "short", "at least 12"),
        ("dr.li", " " * 12, "only spaces"),
        ("dr.li-long-name", "DR.LI-long-name", "the username"),
        ("dr.li", "x" * 257, "at most 256"),
    ],
)
def test_weak_passwords_are_refused_without_echoing_them(
    username: str, password: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_password(username, password)
    assert password.strip() == "" or password not in str(caught.value)


def test_a_good_password_and_the_username_form() -> None:
    check_password("dr.li", "correct horse battery")
    assert check_username("  Dr.Li@H002 ") == "dr.li@h002"
    for bad in ("x", "-lead", "has space", "a" * 65, "中文"):
        with pytest.raises(ValueError, match="2-64"):
            check_username(bad)
    assert len(generate_password()) == 20


def test_five_failures_within_the_window_lock_for_the_lockout() -> None:
    policy = LockoutPolicy(5, timedelta(minutes=15), timedelta(minutes=15))
    state = Failures()
    for i in range(4):
        state = after_failure(state, T0 + i * MIN, policy)
        assert not state.locked(T0 + i * MIN)
    assert (state.count, state.window_start) == (4, T0)
    locked = after_failure(state, T0 + 4 * MIN, policy)
    assert just_locked(state, locked, T0 + 4 * MIN)
    assert locked.locked_until == T0 + 19 * MIN and locked.count == 0
    assert locked.locked(T0 + 18 * MIN) and not locked.locked(T0 + 19 * MIN)
    # Failing while locked neither counts nor extends the lock.
    assert after_failure(locked, T0 + 10 * MIN, policy) == locked
    # After the lock, counting starts afresh.
    assert after_failure(locked, T0 + 20 * MIN, policy).count == 1


def test_failures_outside_the_window_start_the_count_over() -> None:
    policy = LockoutPolicy(3, timedelta(minutes=15), timedelta(minutes=15))
    state = after_failure(after_failure(Failures(), T0, policy), T0 + MIN, policy)
    assert state.count == 2
    later = after_failure(state, T0 + 15 * MIN, policy)  # the window has passed
    assert (later.count, later.window_start, later.locked_until) == (1, T0 + 15 * MIN, None)


def test_a_session_ends_idle_or_absolute_whichever_comes_first() -> None:
    policy = SessionPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12))
    assert session_expires_at(T0, T0, policy) == T0 + 30 * MIN
    assert session_alive(T0, T0, T0 + 29 * MIN, policy)
    assert not session_alive(T0, T0, T0 + 30 * MIN, policy)
    # Used every 20 minutes it lives until the absolute timeout, not a minute more.
    last = T0 + timedelta(hours=11, minutes=50)
    assert session_expires_at(T0, last, policy) == T0 + timedelta(hours=12)
    assert not session_alive(T0, last, T0 + timedelta(hours=12), policy)
    # last_seen_at is written at most every minute (10% of a short idle timeout).
    assert policy.touch_every == MIN
    assert not needs_touch(T0, T0 + timedelta(seconds=59), policy)
    assert needs_touch(T0, T0 + MIN, policy)
    assert SessionPolicy(idle=timedelta(minutes=5)).touch_every == timedelta(seconds=30)


def test_passwords_hash_with_argon2id_and_verify() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct" not in stored
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong horse battery")
    assert not verify_password(None, "correct horse battery")  # the dummy hash path
    assert not verify_password("not a hash", "x")


def test_session_ids_are_stored_hashed_and_csrf_tokens_are_tied_to_them() -> None:
    a, b = new_session_id(), new_session_id()
    assert a != b and len(a) >= 43
    assert session_id_hash(a) != a and len(session_id_hash(a)) == 64
    assert csrf_token(a) != csrf_token(b) and csrf_token(a) == csrf_token(a)
    assert csrf_matches(a, csrf_token(a))
    assert not csrf_matches(a, csrf_token(b)) and not csrf_matches(a, None)
