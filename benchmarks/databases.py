"""A database for one part of the bench: a SQLite file, or a PostgreSQL schema made for the
run and dropped after it. Each comes with the environment its mrb processes run in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.procs import mrb
from broker.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Db:
    kind: str  # sqlite | postgres
    data_dir: Path
    url: str | None  # None: SQLite in data_dir
    schema: str | None

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "MRB_DATA_DIR": str(self.data_dir),
            "MRB_QUIET": "1",
            "MRB_LOG_LEVEL": "WARNING",
            "MRB_METRICS_PORT": "0",
            # The bench measures the check, not the limits that protect it.
            "MRB_RATE_LIMIT_PER_MINUTE": "0",
            "MRB_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "0",
            "MRB_DISTINCT_PATIENTS_PER_HOUR": "0",
            "MRB_CONSUMER_SESSION_TIMEOUT_MS": "2000",
            # The worker's consumer group; with PostgreSQL it must be given.
            "MRB_INSTALLATION_ID": f"bench-{self.kind}-{self.schema or 'file'}",
        }
        for name in ("MRB_DATABASE_URL", "MRB_DATABASE_SCHEMA", "MRB_KAFKA_BOOTSTRAP"):
            env.pop(name, None)
        if self.url:
            env["MRB_DATABASE_URL"] = self.url
        if self.schema:
            env["MRB_DATABASE_SCHEMA"] = self.schema
        return env | extra

    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            database_url=self.url,
            database_schema=self.schema,
            metrics_port=0,
        )

    def sqlite_files(self) -> list[str]:
        base = self.data_dir / "mrb.db"
        return [str(base), f"{base}-wal"]


@contextlib.asynccontextmanager
async def database(kind: str, root: Path, pg_url: str, *, keep: bool = False) -> AsyncIterator[Db]:
    """A migrated, empty database with the broker's keys in `root`; with `keep`, a
    PostgreSQL schema is left in place after the run (named on stderr) for inspection."""
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    if kind == "sqlite":
        db = Db(kind, root, None, None)
        _prepare(db)
        yield db
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(pg_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        db = Db(kind, root, pg_url, schema)
        _prepare(db)
        yield db
    finally:
        if keep:
            print(f"[bench] kept PostgreSQL schema {schema} (drop it when done)", file=sys.stderr)
        else:
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


def _prepare(db: Db) -> None:
    env = db.env()
    mrb(["keys", "init"], env)
    mrb(["db", "upgrade"], env)
