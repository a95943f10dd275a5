"""hospital signing keys (Ed25519 public keys, revocable)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hospital_key",
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=200), nullable=False),
        sa.Column("added_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_hospital_key_hospital_id_hospital")
        ),
        sa.PrimaryKeyConstraint("hospital_id", "key_id", name=op.f("pk_hospital_key")),
    )


def downgrade() -> None:
    op.drop_table("hospital_key")
