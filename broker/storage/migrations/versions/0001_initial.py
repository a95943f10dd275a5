"""initial schema: hospitals, people, results, checks, audit

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 19:17:23.773543
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import broker.storage.tables


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('patient_pseudonym', sa.String(length=64), nullable=True),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    op.create_table('hospital',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('region', sa.String(length=12), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('created_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hospital'))
    )
    op.create_table('inbox',
    sa.Column('message_id', sa.String(length=36), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('results', sa.Integer(), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('processed_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_inbox'))
    )
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbox_hospital_id'), ['hospital_id'], unique=False)

    op.create_table('payload',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=36), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('algorithm', sa.String(length=16), nullable=False),
    sa.Column('nonce', sa.LargeBinary(), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('received_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payload')),
    sa.UniqueConstraint('message_id', name=op.f('uq_payload_message_id'))
    )
    op.create_table('person',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('merged_into', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['merged_into'], ['person.id'], name=op.f('fk_person_merged_into_person')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person'))
    )
    op.create_table('recognition_check',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ordering_hospital', sa.String(length=32), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('order_time', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('emergency', sa.Boolean(), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recognition_check'))
    )
    with op.batch_alter_table('recognition_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recognition_check_ordering_hospital'), ['ordering_hospital'], unique=False)

    op.create_table('rejection',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=True),
    sa.Column('hospital_id', sa.String(length=64), nullable=True),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('topic', sa.String(length=200), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('rejected_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rejection'))
    )
    with op.batch_alter_table('rejection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rejection_code'), ['code'], unique=False)
        batch_op.create_index(batch_op.f('ix_rejection_message_id'), ['message_id'], unique=False)

    op.create_table('person_link',
    sa.Column('pseudonym', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_person_link_person_id_person')),
    sa.PrimaryKeyConstraint('pseudonym', name=op.f('pk_person_link'))
    )
    with op.batch_alter_table('person_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_link_person_id'), ['person_id'], unique=False)

    op.create_table('result',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=False),
    sa.Column('business_id', sa.String(length=400), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('resource_type', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('effective', broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('issued', broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('timezone_assumed', sa.Boolean(), nullable=False),
    sa.Column('updated_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hospital_id'], ['hospital.id'], name=op.f('fk_result_hospital_id_hospital')),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_result_person_id_person')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_result')),
    sa.UniqueConstraint('hospital_id', 'business_id', name='uq_result_identity')
    )
    with op.batch_alter_table('result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_result_person_id'), ['person_id'], unique=False)

    op.create_table('result_item',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('result_id', sa.String(length=36), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('hospital_id', sa.String(length=32), nullable=False),
    sa.Column('resource_type', sa.String(length=40), nullable=False),
    sa.Column('resource_id', sa.String(length=200), nullable=True),
    sa.Column('code_system', sa.String(length=300), nullable=True),
    sa.Column('code', sa.String(length=100), nullable=True),
    sa.Column('display', sa.String(length=300), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('body_site_system', sa.String(length=300), nullable=True),
    sa.Column('body_site_code', sa.String(length=64), nullable=True),
    sa.Column('laterality_code', sa.String(length=64), nullable=True),
    sa.Column('contrast', sa.Boolean(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('effective', broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('recognition_mark', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['result_id'], ['result.id'], name=op.f('fk_result_item_result_id_result')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_result_item'))
    )
    with op.batch_alter_table('result_item', schema=None) as batch_op:
        batch_op.create_index('ix_result_item_person_code', ['person_id', 'code_system', 'code'], unique=False)
        batch_op.create_index('ix_result_item_person_imaging', ['person_id', 'modality', 'body_site_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_result_item_result_id'), ['result_id'], unique=False)

    op.create_table('result_version',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('result_id', sa.String(length=36), nullable=False),
    sa.Column('message_id', sa.String(length=36), nullable=False),
    sa.Column('payload_id', sa.Integer(), nullable=False),
    sa.Column('source_time', broker.storage.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version_number', sa.Integer(), nullable=True),
    sa.Column('version_label', sa.String(length=64), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('is_current', sa.Boolean(), nullable=False),
    sa.Column('received_at', broker.storage.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['payload_id'], ['payload.id'], name=op.f('fk_result_version_payload_id_payload')),
    sa.ForeignKeyConstraint(['result_id'], ['result.id'], name=op.f('fk_result_version_result_id_result')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_result_version')),
    sa.UniqueConstraint('result_id', 'content_hash', name='uq_result_version_content')
    )
    with op.batch_alter_table('result_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_result_version_result_id'), ['result_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('result_version', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_result_version_result_id'))

    op.drop_table('result_version')
    with op.batch_alter_table('result_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_result_item_result_id'))
        batch_op.drop_index('ix_result_item_person_imaging')
        batch_op.drop_index('ix_result_item_person_code')

    op.drop_table('result_item')
    with op.batch_alter_table('result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_result_person_id'))

    op.drop_table('result')
    with op.batch_alter_table('person_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_link_person_id'))

    op.drop_table('person_link')
    with op.batch_alter_table('rejection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rejection_message_id'))
        batch_op.drop_index(batch_op.f('ix_rejection_code'))

    op.drop_table('rejection')
    with op.batch_alter_table('recognition_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recognition_check_ordering_hospital'))

    op.drop_table('recognition_check')
    op.drop_table('person')
    op.drop_table('payload')
    with op.batch_alter_table('inbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbox_hospital_id'))

    op.drop_table('inbox')
    op.drop_table('hospital')
    op.drop_table('audit_event')
