"""Sealed demographics per person and hospital, and their blocking keys as pseudonyms

Revision ID: 0019
Revises: 0018

Patient matching (broker/domain/matching.py) compares name, sex, birth date, phone and
address. Each hospital's values are kept sealed like payloads (`person_demographics`), and
the blocks a record falls in (birth date, surname and birth year, phone, name in pinyin) as
keyed pseudonyms (`person_block`), so candidates are found without anything in clear.

Also: `audit_event` indexed by person and by patient pseudonym (with the time), which a
patient's access report reads instead of scanning the period's entries.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.storage.metadata import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "person_demographics",
        sa.Column("person_id", sa.String(36), sa.ForeignKey("person.id"), primary_key=True),
        sa.Column("hospital_id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "person_block",
        sa.Column("pseudonym", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(36), sa.ForeignKey("person.id"), primary_key=True),
        sa.Column("hospital_id", sa.String(32), primary_key=True),
    )
    op.create_index("ix_person_block_person", "person_block", ["person_id", "hospital_id"])
    op.create_index("ix_audit_event_person", "audit_event", ["person_id", "at"])
    op.create_index("ix_audit_event_pseudonym", "audit_event", ["patient_pseudonym", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_event_pseudonym", table_name="audit_event")
    op.drop_index("ix_audit_event_person", table_name="audit_event")
    op.drop_index("ix_person_block_person", table_name="person_block")
    op.drop_table("person_block")
    op.drop_table("person_demographics")
