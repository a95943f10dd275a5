"""Patient consent, opt-out and break-glass reads (issue #19)

Revision ID: 0021
Revises: 0020

Reserved so that work on several issues can land in any order; filled in by that work.
"""

from collections.abc import Sequence

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
