"""Patient identity review queue and reversible links (issue #17)

Revision ID: 0020
Revises: 0019

`identity_link`: one person linked into another (person.merged_into), by a platform admin
or by an automatic demographic MATCH at ingest; an unlink ends the row, never deletes it.
`identity_review`: the pairs the matcher found, with per-field levels and weights and the
rules version (no demographics), waiting for review (POSSIBLE_MATCH) or kept as the
reasons of an automatic link.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.storage.metadata import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("ended_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "identity_link",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), sa.ForeignKey("person.id"), nullable=False),
        sa.Column("into_person_id", sa.String(36), sa.ForeignKey("person.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("review_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("ended_by", sa.String(200), nullable=True),
        sa.Column("end_reason", sa.String(16), nullable=True),
    )
    op.create_index(
        "uq_identity_link_active",
        "identity_link",
        ["person_id"],
        unique=True,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index("ix_identity_link_into", "identity_link", ["into_person_id"])
    op.create_table(
        "identity_review",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), sa.ForeignKey("person.id"), nullable=False),
        sa.Column("candidate_id", sa.String(36), sa.ForeignKey("person.id"), nullable=False),
        sa.Column("hospital_id", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.Column("fields", sa.JSON, nullable=False),
        sa.Column("identifier", sa.String(16), nullable=False),
        sa.Column("hard_rules", sa.JSON, nullable=False),
        sa.Column("rules_version", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.UniqueConstraint("person_id", "candidate_id", name="uq_identity_review_pair"),
    )
    op.create_index("ix_identity_review_status", "identity_review", ["status", "created_at"])
    op.create_index("ix_identity_review_candidate", "identity_review", ["candidate_id"])


def downgrade() -> None:
    op.drop_index("ix_identity_review_candidate", table_name="identity_review")
    op.drop_index("ix_identity_review_status", table_name="identity_review")
    op.drop_table("identity_review")
    op.drop_index("ix_identity_link_into", table_name="identity_link")
    op.drop_index("uq_identity_link_active", table_name="identity_link")
    op.drop_table("identity_link")
