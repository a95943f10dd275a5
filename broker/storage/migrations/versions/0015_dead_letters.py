"""dead letters kept in the database beyond Kafka retention, with a status

Revision ID: 0015
Revises: 0014

Each `rejection` row now keeps what `mrb dlq replay` needs: the original value sealed with
the broker's payload key (AES-GCM, the message id as associated data, as the Kafka DLQ
copy), its headers, key and origin. Its status goes open -> replayed (by whom, when) ->
resolved (a later message with the same id was indexed) or purged (`mrb dlq purge`
dropped the sealed value; code, detail and dates stay). Rows written before this
revision are open with no stored value.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = broker.storage.tables.UTCDateTime(timezone=True)
    with op.batch_alter_table("rejection", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="open", nullable=False)
        )
        batch_op.add_column(sa.Column("value_key_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("value_algorithm", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("value_sealed", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("headers", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("message_key", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("replayed_at", when, nullable=True))
        batch_op.add_column(sa.Column("replayed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("replays", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("resolved_at", when, nullable=True))
        batch_op.add_column(sa.Column("purged_at", when, nullable=True))
        batch_op.create_index(batch_op.f("ix_rejection_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rejection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejection_status"))
        for column in (
            "purged_at",
            "resolved_at",
            "replays",
            "replayed_by",
            "replayed_at",
            "message_key",
            "headers",
            "value_sealed",
            "value_algorithm",
            "value_key_id",
            "status",
        ):
            batch_op.drop_column(column)
