"""rate limits shared by API processes; CDS clients' allowed FHIR servers

Revision ID: 0012
Revises: 0009

Two small tables hold the rate-limit counters when Redis is not configured: request
counts per token or address per window (rate_limit_counter) and the pseudonyms of the
patients each person looked up in the last hour (rate_limit_patient; never an
identifier). CDS clients gain the list of FHIR server base URLs mrb may read the Patient
from with the EHR's token (fhir_servers; none until an administrator registers them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_counter",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limit_counter")),
    )
    with op.batch_alter_table("rate_limit_counter", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rate_limit_counter_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "rate_limit_patient",
        sa.Column("person", sa.String(length=300), nullable=False),
        sa.Column("patient", sa.String(length=80), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("person", "patient", name=op.f("pk_rate_limit_patient")),
    )
    with op.batch_alter_table("rate_limit_patient", schema=None) as batch_op:
        batch_op.create_index(
            "ix_rate_limit_patient_person_seen", ["person", "seen_at"], unique=False
        )

    with op.batch_alter_table("cds_client", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fhir_servers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cds_client", schema=None) as batch_op:
        batch_op.drop_column("fhir_servers")
    with op.batch_alter_table("rate_limit_patient", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_limit_patient_person_seen")
    op.drop_table("rate_limit_patient")
    with op.batch_alter_table("rate_limit_counter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rate_limit_counter_expires_at"))
    op.drop_table("rate_limit_counter")
