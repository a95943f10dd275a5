"""merge the branches written side by side: tokens (0010), audit sealing (0011) and rate
limits (0012), all from 0009

Revision ID: 0013
Revises: 0010, 0011, 0012
"""

from collections.abc import Sequence

revision: str = "0013"
down_revision: str | Sequence[str] | None = ("0010", "0011", "0012")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
