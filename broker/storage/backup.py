"""Backing up and restoring the broker's database. The keys are never in a backup.

SQLite: sqlite3's online backup API copies a consistent snapshot while the worker and the
API keep writing (WAL readers never block writers). PostgreSQL: `pg_dump --format=custom`
of mrb's schema, `pg_restore` back into it. A backup without MRB_DATA_DIR/keys cannot be
read: payloads, clinical text and birth dates are sealed with the payload keys, and
patients are found only through pseudonym.key. That is the point: a stolen backup file
is not a stolen patient register.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect, literal, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from broker.storage.database import create_engine, session_factory

_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_CUSTOM_MAGIC = b"PGDMP"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Tables whose rows make a database worth protecting from an accidental restore.
DATA_TABLES = ("hospital", "inbox", "payload", "result", "rejection", "audit_event")


class BackupError(Exception):
    """A backup or restore that failed; its message is the operator's one line."""


class Refusal(BackupError):
    """A backup or restore that must not start (exit 2); nothing was changed."""


@dataclass(frozen=True)
class Database:
    """The database a backup is taken from or restored into."""

    url: str  # SQLAlchemy async URL (Settings.resolved_database_url)
    schema: str | None = None  # PostgreSQL: MRB_DATABASE_SCHEMA (unset: public)

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return Path(self.url.split("///", 1)[1])

    @property
    def pg_schema(self) -> str:
        return self.schema or "public"

    def describe(self) -> str:
        """Where it is, without any password."""
        if self.sqlite:
            return f"SQLite database {self.path}"
        u = make_url(self.url)
        where = f"{u.host or 'localhost'}:{u.port or 5432}/{u.database}"
        return f"PostgreSQL {where} schema {self.pg_schema}"


def backup(db: Database, dest: Path) -> None:
    """Write a consistent copy of the database to `dest` (a new file)."""
    if dest.exists():
        raise Refusal(f"{dest} exists: a backup never overwrites a file; give a new name")
    if not dest.parent.is_dir():
        raise Refusal(f"folder {dest.parent} does not exist")
    partial = dest.with_name(f".{dest.name}.partial")
    try:
        if db.sqlite:
            _sqlite_backup(db.path, partial)
        else:
            _pg_dump(db, partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def backup_kind(path: Path) -> str:
    """ "sqlite" or "postgresql" from the file's first bytes; Refusal for anything else."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise Refusal(f"cannot read {path}: {exc.strerror or exc}") from None
    if head == _SQLITE_MAGIC:
        return "sqlite"
    if head.startswith(_PG_CUSTOM_MAGIC):
        return "postgresql"
    raise Refusal(f"{path} is not an mrb backup (neither a SQLite file nor a pg_dump archive)")


async def holds_data(db: Database) -> bool:
    """True when any of DATA_TABLES has a row (a restore would destroy it)."""
    if db.sqlite and not db.path.exists():
        return False
    engine = create_engine(db.url, schema=db.schema)
    try:
        async with engine.connect() as conn:
            schema = None if db.sqlite else db.pg_schema
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names(schema=schema)))
            for name in DATA_TABLES:
                if name in names:
                    row = await conn.execute(
                        select(literal(1)).select_from(sql_table(name)).limit(1)
                    )
                    if row.first() is not None:
                        return True
    finally:
        await engine.dispose()
    return False


async def restore(db: Database, source: Path) -> None:
    """Replace the database with the backup's content (the caller checked holds_data and
    runs the migrations afterwards)."""
    kind = backup_kind(source)
    wanted = "sqlite" if db.sqlite else "postgresql"
    if kind != wanted:
        raise Refusal(
            f"{source} is a {kind} backup but the database ({db.describe()}) is {wanted}: "
            "restore it into the same kind of database"
        )
    if db.sqlite:
        _sqlite_restore(source, db.path)
        return
    schemas = _dump_schemas(source)
    if db.pg_schema not in schemas:
        raise Refusal(
            f"{source} holds schema {', '.join(sorted(schemas)) or '(none)'}, not "
            f"{db.pg_schema}: set MRB_DATABASE_SCHEMA to the backup's schema"
        )
    tool = _tool("pg_restore")  # before anything is dropped
    await _drop_schema(db)
    _run_pg(
        db,
        [tool, "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"],
        str(source),
        what="pg_restore",
        after=f"schema {db.pg_schema} is now empty: restore again",
    )


async def payload_keys_needed(db: Database) -> Counter[str]:
    """Rows per payload key id the database (or a SQLite backup file) holds, read-only."""
    from broker.storage.rekey import keys_in_use  # rekey imports the tables: late

    if db.sqlite:
        engine = create_async_engine(f"sqlite+aiosqlite:///file:{db.path}?mode=ro&uri=true")
    else:
        engine = create_engine(db.url, schema=db.schema)
    try:
        return await keys_in_use(session_factory(engine))
    finally:
        await engine.dispose()


# -- SQLite ------------------------------------------------------------------------------


def _sqlite_backup(source: Path, dest: Path) -> None:
    if not source.is_file():
        raise Refusal(f"no database at {source}")
    src = sqlite3.connect(source, timeout=30)
    try:
        copy = sqlite3.connect(dest)
        try:
            src.backup(copy)  # one step: one read snapshot, writers go on (WAL)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from None
    finally:
        src.close()


def _sqlite_restore(source: Path, dest: Path) -> None:
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise Refusal(f"cannot open {source}: {exc}") from None
    try:
        try:
            src.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error:
            raise Refusal(f"{source} is a SQLite file but not an mrb database") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.restoring")
        partial.unlink(missing_ok=True)
        try:
            copy = sqlite3.connect(partial)
            try:
                src.backup(copy)
            finally:
                copy.close()
            # The old file's write-ahead log must not be replayed onto the restored one.
            for suffix in ("-wal", "-shm"):
                Path(f"{dest}{suffix}").unlink(missing_ok=True)
            os.replace(partial, dest)
        except (sqlite3.Error, OSError) as exc:
            raise BackupError(f"restoring {source} into {dest} failed: {exc}") from None
        finally:
            partial.unlink(missing_ok=True)
    finally:
        src.close()


# -- PostgreSQL --------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Refusal(
            f"{name} is not on the PATH: install the PostgreSQL client tools (the same or a "
            "newer major version than the server)"
        )
    return found


def _pg_dump(db: Database, dest: Path) -> None:
    schema = _checked_schema(db.pg_schema)
    tool = _tool("pg_dump")
    _run_pg(
        db,
        [tool, "--format=custom", "--no-owner", "--no-privileges", f'--schema="{schema}"'],
        f"--file={dest}",
        what="pg_dump",
    )


def _run_pg(db: Database, command: list[str], *last: str, what: str, after: str = "") -> None:
    """Run a PostgreSQL client tool on the database (the password through PGPASSWORD,
    never on the command line); BackupError with its last stderr line if it fails."""
    u = make_url(db.url)
    env = {**os.environ}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    ssl = u.query.get("ssl") or u.query.get("sslmode")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    args = [*command, f"--dbname={u.database or ''}"]
    if u.host:
        args.append(f"--host={u.host}")
    if u.port:
        args.append(f"--port={u.port}")
    if u.username:
        args.append(f"--username={u.username}")
    # The tool found on the PATH, the operator's own settings: no shell, no untrusted input.
    done = subprocess.run(  # noqa: S603
        [*args, *last], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        cause = lines[-1] if lines else f"exit code {done.returncode}"
        raise BackupError(f"{what} failed: {cause}" + (f"; {after}" if after else ""))


def _checked_schema(name: str) -> str:
    if not _SCHEMA_NAME.match(name):
        raise Refusal(f"schema name {name!r} is not a plain identifier")
    return name


def _dump_schemas(source: Path) -> set[str]:
    """The schemas a pg_dump archive creates (from its table of contents)."""
    done = subprocess.run(  # noqa: S603
        [_tool("pg_restore"), "--list", str(source)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise Refusal(f"{source} is not a readable pg_dump archive")
    found = set()
    for line in done.stdout.splitlines():
        parts = line.split()
        # "6; 2615 20649 SCHEMA - t_abc postgres"
        if len(parts) >= 6 and not line.startswith(";") and parts[3:5] == ["SCHEMA", "-"]:
            found.add(parts[5])
    return found


async def _drop_schema(db: Database) -> None:
    schema = _checked_schema(db.pg_schema)
    engine = create_engine(db.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()
