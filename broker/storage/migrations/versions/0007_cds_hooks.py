"""CDS Hooks: EHR clients, the JWT replay guard, draft orders and cards

Revision ID: 0007
Revises: 0005_fhir
Create Date: 2026-12-02 01:06:14.181357

Tables of broker/storage/cds_tables.py (broker/cdshooks). No identifiers in clear.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables


revision: str = "0007"
# Chained after the FHIR search index ("0005_fhir", itself after "0005") so the history
# has one head; re-chain here if the migrations are renumbered when merging.
down_revision: str | None = "0005_fhir"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cds_client",
        sa.Column("issuer", sa.String(length=300), nullable=False),
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.Column("jwks_url", sa.String(length=1000), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.Column("added_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_cds_client_hospital_id_hospital")
        ),
        sa.PrimaryKeyConstraint("issuer", name=op.f("pk_cds_client")),
    )
    with op.batch_alter_table("cds_client", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cds_client_hospital_id"), ["hospital_id"], unique=False)

    op.create_table(
        "cds_jti",
        sa.Column("issuer", sa.String(length=300), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti", name=op.f("pk_cds_jti")),
    )
    with op.batch_alter_table("cds_jti", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cds_jti_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "cds_draft_order",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.Column("patient_pseudonym", sa.String(length=64), nullable=False),
        sa.Column("draft_ref", sa.String(length=200), nullable=False),
        sa.Column("order_key", sa.String(length=64), nullable=False),
        sa.Column("check_id", sa.String(length=36), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("created_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["check_id"],
            ["recognition_check.id"],
            name=op.f("fk_cds_draft_order_check_id_recognition_check"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cds_draft_order")),
        sa.UniqueConstraint(
            "hospital_id",
            "patient_pseudonym",
            "draft_ref",
            "order_key",
            name="uq_cds_draft_order_key",
        ),
    )

    op.create_table(
        "cds_card",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("suggestion_uuid", sa.String(length=36), nullable=True),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=300), nullable=False),
        sa.Column("hospital_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("check_id", sa.String(length=36), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("draft_ref", sa.String(length=200), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["check_id"],
            ["recognition_check.id"],
            name=op.f("fk_cds_card_check_id_recognition_check"),
        ),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_cds_card")),
    )
    with op.batch_alter_table("cds_card", schema=None) as batch_op:
        batch_op.create_index("ix_cds_card_check_item", ["check_id", "item_index"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cds_card", schema=None) as batch_op:
        batch_op.drop_index("ix_cds_card_check_item")
    op.drop_table("cds_card")
    op.drop_table("cds_draft_order")
    with op.batch_alter_table("cds_jti", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cds_jti_expires_at"))
    op.drop_table("cds_jti")
    with op.batch_alter_table("cds_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cds_client_hospital_id"))
    op.drop_table("cds_client")
