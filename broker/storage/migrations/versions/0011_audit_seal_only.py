"""audit entries: an unsealed entry can only be sealed; new entries arrive unsealed

Revision ID: 0011
Revises: 0009

0008 refused deleting entries and changing sealed ones, but an entry not sealed yet
(the few seconds before the sealer links it) could still be rewritten. Now an update of
an unsealed entry must leave every content column as it is and set seq, prev_hash and
hash together, once; an insert must not bring its own seal.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns an entry's hash covers (broker.domain.audit_chain.FIELDS).
CONTENT = (
    "id", "at", "actor", "role", "hospital_id", "action", "purpose",
    "patient_pseudonym", "person_id", "detail",
)  # fmt: skip
SEAL = ("seq", "prev_hash", "hash")


def _pg_changed(column: str) -> str:
    if column == "detail":  # json has no equality operator: compare its text
        return "NEW.detail::text IS DISTINCT FROM OLD.detail::text"
    return f"NEW.{column} IS DISTINCT FROM OLD.{column}"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        changed = " OR ".join(_pg_changed(c) for c in CONTENT)
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
        op.execute(
            "CREATE TRIGGER audit_event_insert_guard BEFORE INSERT ON audit_event "
            "FOR EACH ROW EXECUTE FUNCTION audit_event_guard()"
        )
    else:
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in CONTENT)
        op.execute(
            "CREATE TRIGGER audit_event_unsealed BEFORE UPDATE ON audit_event "
            "WHEN OLD.hash IS NULL AND ("
            f"{' OR '.join(f'OLD.{c} IS NOT NULL' for c in SEAL)} OR "
            f"{' OR '.join(f'NEW.{c} IS NULL' for c in SEAL)} OR {changed}) "
            "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: an unsealed entry can "
            "only be sealed, its content cannot change'); END"
        )
        op.execute(
            "CREATE TRIGGER audit_event_insert_unsealed BEFORE INSERT ON audit_event "
            f"WHEN {' OR '.join(f'NEW.{c} IS NOT NULL' for c in SEAL)} "
            "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only: a new entry arrives "
            "unsealed'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_event_insert_guard ON audit_event")
        op.execute(  # 0008's function
            "CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_OP = 'DELETE' OR OLD.hash IS NOT NULL THEN "
            "RAISE EXCEPTION 'audit entries are append-only: a sealed entry cannot change'; "
            "END IF; RETURN NEW; END; $$"
        )
    else:
        op.execute("DROP TRIGGER audit_event_unsealed")
        op.execute("DROP TRIGGER audit_event_insert_unsealed")
