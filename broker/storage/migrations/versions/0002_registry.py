"""hospital registry for the rules: grade, ownership, price tier, alliances, certifications

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hospital") as batch:
        batch.add_column(sa.Column("grade", sa.String(length=4), nullable=True))
        batch.add_column(
            sa.Column("ownership", sa.String(length=16), nullable=False, server_default="public")
        )
        batch.add_column(sa.Column("price_tier", sa.String(length=8), nullable=True))
    op.create_table(
        "hospital_alliance",
        sa.Column("alliance_id", sa.String(length=64), nullable=False),
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_hospital_alliance_hospital_id_hospital")
        ),
        sa.PrimaryKeyConstraint("alliance_id", "hospital_id", name=op.f("pk_hospital_alliance")),
    )
    op.create_table(
        "certification",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("body", sa.String(length=32), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("created_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_certification_hospital_id_hospital")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certification")),
    )
    op.create_index(
        op.f("ix_certification_hospital_id"), "certification", ["hospital_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_certification_hospital_id"), table_name="certification")
    op.drop_table("certification")
    op.drop_table("hospital_alliance")
    with op.batch_alter_table("hospital") as batch:
        batch.drop_column("price_tier")
        batch.drop_column("ownership")
        batch.drop_column("grade")
