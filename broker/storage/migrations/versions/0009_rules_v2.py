"""recognition rules v2: result content, protocol, flags; versions on checks

Revision ID: 0009
Revises: 0008

Result items gain what the rules need to refuse empty results (no_value), match imaging
protocols and warn about newer or abnormal results (value_text, unit, flags). Checks
record the catalog and policy versions they used.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('result_item') as batch:
        batch.add_column(sa.Column('protocol', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('value_text', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('unit', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('flags', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('no_value', sa.String(length=120), nullable=True))
    with op.batch_alter_table('recognition_check') as batch:
        batch.add_column(sa.Column('catalog_version', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('policy_version', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recognition_check') as batch:
        batch.drop_column('policy_version')
        batch.drop_column('catalog_version')
    with op.batch_alter_table('result_item') as batch:
        for column in ('no_value', 'flags', 'unit', 'value_text', 'protocol'):
            batch.drop_column(column)
