"""people who log in through OpenID Connect, mapped to a role and hospital by mrb

Revision ID: 0014
Revises: 0013

One row per issuer and subject a security administrator mapped (`mrb user map`): the
role and hospital ('*' for platform roles) mrb grants, a display name, who mapped it and
when, and when it was disabled. A token of the configured issuer whose subject has no
enabled row here is refused with 403.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oidc_user",
        sa.Column("issuer", sa.String(length=300), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("hospital", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("issuer", "subject", name=op.f("pk_oidc_user")),
    )
    with op.batch_alter_table("oidc_user", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_user_hospital"), ["hospital"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_user_hospital"))
    op.drop_table("oidc_user")
