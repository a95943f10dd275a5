"""person.merged_into indexed (the people merged into one, found without a table scan)

Revision ID: 0018
Revises: 0017

Every check reads the person's birth dates, those of the people merged into them included
(`merged_into = :person`); without an index that is a scan of `person` and of
`person_birth_date`, which `make bench` showed growing from 10 to 30 ms a check between 100k
and 1M results on PostgreSQL. Partial: only merged people have a value.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = sa.text("merged_into IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_person_merged_into",
        "person",
        ["merged_into"],
        postgresql_where=WHERE,
        sqlite_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index("ix_person_merged_into", table_name="person")
