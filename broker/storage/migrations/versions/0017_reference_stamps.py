"""reference stamps: a version per kind of reference data, bumped by triggers

Revision ID: 0017
Revises: 0016

`reference_stamp` holds one row per kind of reference data a check reads on every request:
`registry` (hospital, hospital_alliance, certification: the hospital profiles) and
`mappings` (code_mapping). A trigger on each of those tables adds one to its kind's version
in the writing transaction, whatever writes (mrb, an operator's SQL, a restore), so an API
process may keep the data in memory and read it again only when the version moved
(broker/storage/reference_cache.py). A later migration that rebuilds one of these tables in
SQLite batch mode (a table copy) drops its triggers and must create them again:
tests/integration/test_reference_cache.py checks that every one is in place.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WATCHED = {
    "hospital": "registry",
    "hospital_alliance": "registry",
    "certification": "registry",
    "code_mapping": "mappings",
}


def upgrade() -> None:
    op.create_table(
        "reference_stamp",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO reference_stamp (name, version) VALUES ('registry', 0), ('mappings', 0)")
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            "CREATE OR REPLACE FUNCTION reference_stamp_bump() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "UPDATE reference_stamp SET version = version + 1 WHERE name = TG_ARGV[0]; "
            "RETURN NULL; END; $$"
        )
    for table, kind in WATCHED.items():
        if postgres:
            op.execute(
                f"CREATE TRIGGER {table}_stamp AFTER INSERT OR UPDATE OR DELETE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION reference_stamp_bump('{kind}')"
            )
            continue
        for event in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_stamp_{event.lower()} AFTER {event} ON {table} "
                f"BEGIN UPDATE reference_stamp SET version = version + 1 "
                f"WHERE name = '{kind}'; END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in WATCHED:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_stamp ON {table}")
        else:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_stamp_{event}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS reference_stamp_bump()")
    op.drop_table("reference_stamp")
