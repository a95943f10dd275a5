"""Local web accounts and sessions as pure rules: the password policy, lockout after
repeated failures, and when a session expires (idle or absolute).

The I/O lives elsewhere: hashing in broker/security/passwords.py, rows in
broker/storage/web_accounts.py, the flow in broker/services/web_login.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_PASSWORD_LENGTH = 12
# argon2 hashes any length, but an unbounded password is a cheap way to make it work hard.
MAX_PASSWORD_LENGTH = 256
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")


def normalize_username(username: str) -> str:
    """The stored form: trimmed, lower-case (so `Dr.Li` and `dr.li` are one account)."""
    return username.strip().lower()


def check_username(username: str) -> str:
    """The normalized username; ValueError when it is not 2-64 of a-z 0-9 . _ @ -."""
    name = normalize_username(username)
    if not _USERNAME.fullmatch(name):
        raise ValueError(
            "a username is 2-64 characters: letters, digits and . _ @ -, starting with a "
            "letter or digit"
        )
    return name


def check_password(username: str, password: str, *, min_length: int = MIN_PASSWORD_LENGTH) -> None:
    """ValueError saying what is wrong with a new password (never echoing it)."""
    if len(password) < min_length:
        raise ValueError(f"a password has at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if not password.strip():
        raise ValueError("a password cannot be only spaces")
    if password.strip().lower() == normalize_username(username):
        raise ValueError("a password cannot be the username")


@dataclass(frozen=True)
class LockoutPolicy:
    """`max_failures` failed logins within `window` lock the account for `lockout`."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Failures:
    """An account's failed-login state as stored: failures counted since `window_start`,
    and the end of a lock in force."""

    count: int = 0
    window_start: datetime | None = None
    locked_until: datetime | None = None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


def after_failure(state: Failures, now: datetime, policy: LockoutPolicy) -> Failures:
    """The state after one more failed login at `now`.

    A failure while locked changes nothing (the lock is not extended, so a guesser cannot
    keep someone locked out longer than by locking again after it ends). The count starts
    over when the window has passed; reaching `max_failures` locks and resets the count.
    """
    if state.locked(now):
        return state
    if state.window_start is None or now - state.window_start >= policy.window:
        count, start = 1, now
    else:
        count, start = state.count + 1, state.window_start
    if count >= policy.max_failures:
        return Failures(0, None, now + policy.lockout)
    return Failures(count, start, None)


def just_locked(before: Failures, after: Failures, now: datetime) -> bool:
    return not before.locked(now) and after.locked(now)


@dataclass(frozen=True)
class SessionPolicy:
    """A session ends after `idle` without a request, and `absolute` after login at most."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)

    @property
    def touch_every(self) -> timedelta:
        """How stale `last_seen_at` may get before a request writes it again: a write per
        request would be wasteful, and this keeps the idle timeout within 10% (≤ 1 min)."""
        return min(timedelta(minutes=1), self.idle / 10)


def session_expires_at(
    created_at: datetime, last_seen_at: datetime, policy: SessionPolicy
) -> datetime:
    """When a session ends unless used again: the earlier of idle and absolute expiry."""
    return min(last_seen_at + policy.idle, created_at + policy.absolute)


def session_alive(
    created_at: datetime, last_seen_at: datetime, now: datetime, policy: SessionPolicy
) -> bool:
    return now < session_expires_at(created_at, last_seen_at, policy)


def needs_touch(last_seen_at: datetime, now: datetime, policy: SessionPolicy) -> bool:
    return now - last_seen_at >= policy.touch_every
