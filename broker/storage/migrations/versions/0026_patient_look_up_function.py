"""The distinct-patient limit's look-up as one PostgreSQL function (issue #16)

Revision ID: 0026
Revises: 0025

A check of a patient new to the doctor's window cost six round trips (the UPDATE that
found them new, then BEGIN, the person's advisory lock, the count, the upsert, COMMIT):
1.6 ms wall and 1.1 ms of the API's CPU on the bench machine, more than the check's own
statements. As one function call it is one round trip and one statement, atomic as the
`limits` library's Lua scripts are on Redis: the lock is held until the statement's
transaction ends, and each query inside a VOLATILE function sees rows committed before
it started, so the count after the lock sees the last holder's insert.
broker/storage/rate_limits.py keeps the same steps in Python for SQLite.

Arguments: the person counting, the patient (pseudonym), now and the window's start
(epoch seconds), the limit, the lock key (the first 8 bytes of SHA-256 of the person,
as the Python path takes it) and whether to purge everyone's expired rows. Returns NULL
when the patient is admitted, else the seconds until the person's oldest patient leaves
the window.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = (
    "mrb_patient_look_up(text, text, double precision, double precision, integer, bigint, "
    "boolean)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
CREATE FUNCTION mrb_patient_look_up(
    who text, whom text, at double precision, since double precision, lim integer,
    lock_key bigint, purge boolean
) RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n integer;
    oldest double precision;
    counted boolean;
BEGIN
    -- Already counted in the window (order-select, then order-sign): no lock needed.
    UPDATE rate_limit_patient SET seen_at = at
        WHERE person = who AND patient = whom AND seen_at > since;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(lock_key);
    IF purge THEN
        DELETE FROM rate_limit_patient WHERE seen_at <= since;
    END IF;
    SELECT count(*), min(seen_at), coalesce(bool_or(patient = whom), false)
        INTO n, oldest, counted
        FROM rate_limit_patient WHERE person = who AND seen_at > since;
    IF NOT counted AND n >= lim THEN
        RETURN greatest(0.0, oldest - since);
    END IF;
    INSERT INTO rate_limit_patient (person, patient, seen_at) VALUES (who, whom, at)
        ON CONFLICT (person, patient) DO UPDATE SET seen_at = EXCLUDED.seen_at;
    RETURN NULL;
END
$$
"""
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {_SIGNATURE}")
