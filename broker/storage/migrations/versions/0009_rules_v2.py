"""recognition rules v2: result content, protocol, flags; versions on checks

Revision ID: 0009
Revises: 0008

Result items gain what the rules need to refuse empty results (no_value), match imaging
protocols and warn about newer or abnormal results (value_text, unit, flags). Checks
record the catalog and policy versions they used. Each hospital's birth date for a
person is kept sealed, for age-banded items. Results and their items gain sealed clinical
text (summaries, values) and a sealed business identifier beside its keyed hash; rows
written before are sealed by `mrb db upgrade` (broker.storage.protect).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('person_birth_date',
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=32), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], ),
    sa.PrimaryKeyConstraint('person_id', 'hospital_id')
    )
    with op.batch_alter_table('result_item') as batch:
        batch.add_column(sa.Column('protocol', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('clinical', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('unit', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('flags', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('no_value', sa.String(length=120), nullable=True))
    with op.batch_alter_table('result') as batch:
        batch.add_column(sa.Column('business_id_sealed', sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column('clinical', sa.LargeBinary(), nullable=True))
    with op.batch_alter_table('recognition_check') as batch:
        batch.add_column(sa.Column('catalog_version', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('policy_version', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('recognition_check') as batch:
        batch.drop_column('policy_version')
        batch.drop_column('catalog_version')
    with op.batch_alter_table('result_item') as batch:
        for column in ('no_value', 'flags', 'unit', 'clinical', 'protocol'):
            batch.drop_column(column)
    with op.batch_alter_table('result') as batch:
        batch.drop_column('clinical')
        batch.drop_column('business_id_sealed')
    op.drop_table('person_birth_date')
