"""Password hashing for local web accounts (argon2id, argon2-cffi), and the secrets of a
web session: its id (only a hash of it is stored) and the CSRF token derived from it.

argon2-cffi's defaults are RFC 9106's second recommended option (argon2id, 64 MiB,
3 passes, 4 lanes); hashing is slow on purpose, so callers run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id by default


def hash_password(password: str) -> str:
    """The PHC string ($argon2id$v=19$m=…) to store: salted, never reversible."""
    return _hasher.hash(password)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored`. With no stored hash (an unknown user) it
    verifies against a dummy hash, so that the answer takes as long as for a known one."""
    try:
        return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when `stored` was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(stored)


def warm_up() -> None:
    """Make the dummy hash now (the first unknown-user login would otherwise take longer)."""
    _dummy_hash()


def generate_password() -> str:
    """A random password of 20 URL-safe characters (120 bits), to be shown once."""
    return secrets.token_urlsafe(15)


def new_session_id() -> str:
    """A session id: 256 random bits, sent only in the cookie."""
    return secrets.token_urlsafe(32)


def session_id_hash(session_id: str) -> str:
    """What the database keeps of a session id: its SHA-256 (the id has 256 random bits,
    so a fast hash is enough; a database reader cannot turn it back into a cookie)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: an HMAC keyed with the session id, so it is tied to the
    session, needs no storage, and cannot be computed by a page that cannot read the
    (HttpOnly) cookie."""
    digest = hmac.new(session_id.encode(), b"mrb csrf v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(session_id: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(session_id), sent)
