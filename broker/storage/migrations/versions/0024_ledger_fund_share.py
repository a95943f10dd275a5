"""Savings ledger: the medical-insurance fund's share and the patient's (issue #18)

Revision ID: 0024
Revises: 0023

`ledger_entry.fund_share` (the fund's fraction of the fee as the check's catalog gave it,
decimal text), `fund_fen` and `patient_fen` (the two shares of `amount_fen`, which they
add up to; a reversal negates both). Fixed when the entry is booked, so a later catalog
change never rewrites what was recorded. Nullable: NULL means the catalog gave no
reimbursement ratio (every entry booked before this revision).

The table is append-only (triggers of 0004): the columns are added in place, never by
rebuilding the table (SQLite batch mode would copy it and drop its triggers).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("fund_share", "fund_fen", "patient_fen")


def upgrade() -> None:
    op.add_column("ledger_entry", sa.Column("fund_share", sa.String(16), nullable=True))
    op.add_column("ledger_entry", sa.Column("fund_fen", sa.BigInteger, nullable=True))
    op.add_column("ledger_entry", sa.Column("patient_fen", sa.BigInteger, nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN in place on both databases (SQLite 3.35 or later), so the
    # append-only triggers stay.
    for column in reversed(_COLUMNS):
        op.drop_column("ledger_entry", column)
