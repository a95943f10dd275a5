"""Patient consent, opt-out and break-glass reads (issue #19)

Revision ID: 0021
Revises: 0020

`patient_consent` (broker/storage/consent_tables.py): per enterprise person, an opt-out of
cross-hospital sharing or a consent for one sensitive category, with who recorded it, where,
when, the evidence reference, the expiry and the withdrawal. No identifier is stored.
Purposes of use and break-glass reads need no table: they are written to `audit_event`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.storage.metadata import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_consent",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), sa.ForeignKey("person.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_role", sa.String(32), nullable=False),
        sa.Column("recorded_hospital", sa.String(32), nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("evidence", sa.String(200), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("withdrawn_at", UTCDateTime, nullable=True),
        sa.Column("withdrawn_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_patient_consent_person", "patient_consent", ["person_id", "recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_patient_consent_person", table_name="patient_consent")
    op.drop_table("patient_consent")
