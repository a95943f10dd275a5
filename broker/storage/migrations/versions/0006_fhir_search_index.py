"""FHIR search index: the resources mrb serves at /fhir and their token values

Revision ID: 0005_fhir
Revises: 0005
Create Date: 2026-12-02 01:04:34.269271

Derived data (rebuilt from the sealed payloads by broker.fhir.index); no identifiers.
The revision id is "0005_fhir" because "0005" (code mappings) landed first; the file is
numbered 0006 for the order it runs in, and 0007 chains after "0005_fhir".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables


revision: str = "0005_fhir"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_resource",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("result_id", sa.String(length=36), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("entry", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("date_low", broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("date_high", broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["result_id"], ["result.id"], name=op.f("fk_fhir_resource_result_id_result")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_resource")),
    )
    with op.batch_alter_table("fhir_resource", schema=None) as batch_op:
        batch_op.create_index(
            "ix_fhir_resource_result", ["result_id", "resource_type"], unique=False
        )

    op.create_table(
        "fhir_token",
        sa.Column("resource_id", sa.String(length=36), nullable=False),
        sa.Column("param", sa.String(length=16), nullable=False),
        sa.Column("system", sa.String(length=300), nullable=False),
        sa.Column("code", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["fhir_resource.id"],
            name=op.f("fk_fhir_token_resource_id_fhir_resource"),
        ),
        sa.PrimaryKeyConstraint("resource_id", "param", "system", "code", name=op.f("pk_fhir_token")),
    )


def downgrade() -> None:
    op.drop_table("fhir_token")
    with op.batch_alter_table("fhir_resource", schema=None) as batch_op:
        batch_op.drop_index("ix_fhir_resource_result")
    op.drop_table("fhir_resource")
