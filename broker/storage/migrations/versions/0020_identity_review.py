"""Patient identity review queue and reversible links (issue #17)

Revision ID: 0020
Revises: 0019

Reserved so that work on several issues can land in any order; filled in by that work.
"""

from collections.abc import Sequence

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
