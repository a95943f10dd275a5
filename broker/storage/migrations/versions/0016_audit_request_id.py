"""audit entries keep the id of the HTTP request that wrote them

Revision ID: 0016
Revises: 0015

`audit_event.request_id`: the request's `X-Request-ID` (the caller's, if short and plain,
else one mrb made), also in the access log line and echoed to the caller. It is part of
the entry's hash when set (broker.domain.audit_chain.OPTIONAL_FIELDS); entries sealed
before have none and keep their hash. The guard on unsealed entries (0011) now also
refuses changing it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0011's content columns, and the new one.
BEFORE = (
    "id", "at", "actor", "role", "hospital_id", "action", "purpose",
    "patient_pseudonym", "person_id", "detail",
)  # fmt: skip
SEAL = ("seq", "prev_hash", "hash")


def upgrade() -> None:
    # Not batch mode: SQLite adds a column in place; a table copy would drop the triggers.
    op.add_column("audit_event", sa.Column("request_id", sa.String(length=128), nullable=True))
    _guard((*BEFORE, "request_id"))


def downgrade() -> None:
    _guard(BEFORE)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_column("audit_event", "request_id")
    else:  # SQLite drops a column in place (3.35+) unless a trigger names it: re-made above
        op.execute("ALTER TABLE audit_event DROP COLUMN request_id")


def _guard(content: tuple[str, ...]) -> None:
    """0011's guard: an unsealed entry can only be sealed; `content` may not change."""
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(
            "NEW.detail::text IS DISTINCT FROM OLD.detail::text"
            if c == "detail"
            else f"NEW.{c} IS DISTINCT FROM OLD.{c}"
            for c in content
        )
        op.execute(
            "CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'DELETE' THEN "
            "RAISE EXCEPTION 'audit entries are append-only: an entry cannot be deleted'; "
            "END IF; "
            "IF TG_OP = 'INSERT' THEN "
            f"IF {' OR '.join(f'NEW.{c} IS NOT NULL' for c in SEAL)} THEN "
            "RAISE EXCEPTION 'audit entries are append-only: a new entry arrives unsealed'; "
            "END IF; RETURN NEW; END IF; "
            f"IF {' OR '.join(f'OLD.{c} IS NOT NULL' for c in SEAL)} THEN "
            "RAISE EXCEPTION 'audit entries are append-only: a sealed entry cannot change'; "
            "END IF; "
            f"IF {changed} THEN "
            "RAISE EXCEPTION 'audit entries are append-only: an unsealed entry can only be "
            "sealed, its content cannot change'; "
            "END IF; "
            f"IF {' OR '.join(f'NEW.{c} IS NULL' for c in SEAL)} THEN "
            "RAISE EXCEPTION 'audit entries are append-only: sealing sets seq, prev_hash and "
            "hash together'; "
            "END IF; RETURN NEW; END; $$"
        )
        return
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in content)
    op.execute("DROP TRIGGER audit_event_unsealed")
    op.execute(
        "CREATE TRIGGER audit_event_unsealed BEFORE UPDATE ON audit_event "
        "WHEN OLD.hash IS NULL AND ("
        f"{' OR '.join(f'OLD.{c} IS NOT NULL' for c in SEAL)} OR "
        f"{' OR '.join(f'NEW.{c} IS NULL' for c in SEAL)} OR {changed}) "
        "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: an unsealed entry can "
        "only be sealed, its content cannot change'); END"
    )
