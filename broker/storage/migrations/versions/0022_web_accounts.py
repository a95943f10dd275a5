"""Local accounts and web sessions (issue #18)

Revision ID: 0022
Revises: 0021

Reserved so that work on several issues can land in any order; filled in by that work.
"""

from collections.abc import Sequence

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
