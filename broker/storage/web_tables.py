"""Tables of the web login (issue #18): local accounts and server-side sessions.

No column holds a password or a session id: an account keeps its argon2id hash, a session
the SHA-256 of its id (broker/security/passwords.py).
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table

from broker.storage.metadata import UTCDateTime, metadata

# A person who logs in with a username and password (the embedded set-up; an OpenID
# Connect issuer's people are in oidc_user). Role and hospital as an API token's.
web_account = Table(
    "web_account",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("hospital", String(32), nullable=False, index=True),  # '*' for platform roles
    Column("display_name", String(200), nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("password_changed_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime, nullable=True),
    # Failed logins counted since failed_since; a lock in force until locked_until.
    Column("failed_count", Integer, nullable=False, server_default="0"),
    Column("failed_since", UTCDateTime, nullable=True),
    Column("locked_until", UTCDateTime, nullable=True),
)

web_session = Table(
    "web_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's id
    Column(
        "username",
        String(64),
        ForeignKey("web_account.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Index("ix_web_session_last_seen_at", "last_seen_at"),
)
