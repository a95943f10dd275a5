"""Local accounts and web sessions (issue #18)

Revision ID: 0022
Revises: 0021

`web_account` (broker/storage/web_tables.py): people who log in to the web pages with a
username and an argon2id-hashed password, with their role, hospital and failed-login
state; `web_session`: server-side sessions, keyed by the SHA-256 of the cookie's id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.storage.metadata import UTCDateTime

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_account",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("hospital", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("password_changed_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime, nullable=True),
        sa.Column("failed_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed_since", UTCDateTime, nullable=True),
        sa.Column("locked_until", UTCDateTime, nullable=True),
    )
    op.create_index("ix_web_account_hospital", "web_account", ["hospital"])
    op.create_table(
        "web_session",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column(
            "username",
            sa.String(64),
            sa.ForeignKey("web_account.username", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_web_session_username", "web_session", ["username"])
    op.create_index("ix_web_session_last_seen_at", "web_session", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_web_session_last_seen_at", table_name="web_session")
    op.drop_index("ix_web_session_username", table_name="web_session")
    op.drop_table("web_session")
    op.drop_index("ix_web_account_hospital", table_name="web_account")
    op.drop_table("web_account")
