"""HIS launch: its sessions, the checks they ran, the HIS origins per client (issue #18)

Revision ID: 0023
Revises: 0022

`his_launch_session` and `his_launch_check` (broker/storage/launch_tables.py): a launch
session keyed by the SHA-256 of its cookie's id, with the launching client, hospital and
HIS user and the launch (patient, items, purpose) sealed; the checks it ran, readable back
by the client for a while. `cds_client.launch_origins`: the origins of the client's HIS
pages that may frame the launch page and receive its decision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from broker.storage.metadata import UTCDateTime

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("cds_client", sa.Column("launch_origins", sa.JSON, nullable=True))
    op.create_table(
        "his_launch_session",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(300), sa.ForeignKey("cds_client.issuer"), nullable=False),
        sa.Column("hospital_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("launch", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_his_launch_session_expires_at", "his_launch_session", ["expires_at"])
    op.create_table(
        "his_launch_check",
        sa.Column(
            "check_id", sa.String(36), sa.ForeignKey("recognition_check.id"), primary_key=True
        ),
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(300), nullable=False),
        sa.Column("hospital_id", sa.String(32), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_his_launch_check_expires_at", "his_launch_check", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_his_launch_check_expires_at", table_name="his_launch_check")
    op.drop_table("his_launch_check")
    op.drop_index("ix_his_launch_session_expires_at", table_name="his_launch_session")
    op.drop_table("his_launch_session")
    with op.batch_alter_table("cds_client") as batch_op:
        batch_op.drop_column("launch_origins")
