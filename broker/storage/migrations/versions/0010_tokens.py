"""issued API tokens and their revocation

Revision ID: 0010
Revises: 0009

Every token `mrb token issue` signs is recorded (never the token text): subject, role,
hospital, kind, signing key, lifetime, who issued it, and who revoked it and why. The API
refuses tokens that are not recorded here or are revoked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('issued_token',
    sa.Column('jti', sa.String(length=36), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('hospital', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('issued_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('issued_by', sa.String(length=200), nullable=False),
    sa.Column('revoked_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_issued_token'))
    )
    with op.batch_alter_table('issued_token') as batch_op:
        batch_op.create_index(batch_op.f('ix_issued_token_subject'), ['subject'], unique=False)
        batch_op.create_index(batch_op.f('ix_issued_token_hospital'), ['hospital'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('issued_token') as batch_op:
        batch_op.drop_index(batch_op.f('ix_issued_token_hospital'))
        batch_op.drop_index(batch_op.f('ix_issued_token_subject'))
    op.drop_table('issued_token')
