"""Shared fixtures: real SQLite and PostgreSQL databases, a real Tansu broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.common.signing import create_key
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.registry import Certification, CertifyingBody
from broker.kafka.embedded import EmbeddedKafka
from broker.kafka.topics import default_partitions, ensure_topics
from broker.runtime import Stack
from broker.services import registry as registry_service
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.database import upgrade
from tests import factories

# The CLI's rich consoles take their width when first imported (none is imported above):
# fix it, so table output does not depend on which test or xdist worker imported them first.
os.environ["COLUMNS"] = "250"

# Who registry changes made directly through the services are recorded as in tests.
PLATFORM_ADMIN = Actor("platform-admin.tests", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
REPO = Path(__file__).resolve().parent.parent
REALDATA = REPO.parent / "shared" / "realdata"
PG_URL = os.environ.get(
    "MRB_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Db:
    kind: str
    url: str
    schema: str | None


class Templates:
    """Migrate once per test process, copy for each test. A migration run costs 0.3-1 s
    (Alembic, two dozen revisions; more when the CPU is busy); a copy of the SQLite file
    a few milliseconds, and replaying pg_dump's script of a migrated PostgreSQL schema
    into a fresh schema about 0.1 s (one round trip, no Alembic). Either way each test
    starts from exactly what `upgrade` makes: the file itself, or every table, index,
    constraint, sequence, trigger and row of the migrated schema. Where pg_dump is
    missing or fails, each PostgreSQL test migrates its schema as before. The migrations
    themselves are tested on freshly migrated databases (test_migrations.py)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.sqlite: Path | None = None
        self.pg_script: str | None = None  # pg_dump's script, schema named TEMPLATE
        self.pg_replay = True  # False: pg_dump failed, migrate each schema

    async def sqlite_copy(self, target: Path) -> None:
        if self.sqlite is None:
            template = self.directory / "template.db"
            await upgrade(f"sqlite+aiosqlite:///{template}")
            self.sqlite = template
        # Alembic's engine is disposed: the WAL is checkpointed into the file; copy any
        # side file anyway, should one be left.
        for suffix in ("", "-wal", "-shm"):
            source = self.sqlite.with_name(self.sqlite.name + suffix)
            if source.exists():
                shutil.copyfile(source, target.with_name(target.name + suffix))

    async def pg_schema(self, schema: str) -> None:
        """Make `schema` a migrated mrb schema."""
        if self.pg_script is None and self.pg_replay:
            self.pg_script = await self._dump_migrated()
            self.pg_replay = self.pg_script is not None
        if self.pg_script is None:
            await pg_sql(f'CREATE SCHEMA "{schema}"')
            await upgrade(PG_URL, schema)
            return
        await pg_sql(self.pg_script.replace(TEMPLATE, schema))

    async def _dump_migrated(self) -> str | None:
        await pg_sql(f'CREATE SCHEMA "{TEMPLATE}"')
        try:
            await upgrade(PG_URL, TEMPLATE)
            url = make_url(PG_URL)
            args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
            args += ["-U", url.username or "postgres", "-d", url.database or "postgres"]
            dumped = await asyncio.to_thread(
                subprocess.run,
                ["pg_dump", *args, "-n", TEMPLATE, "--no-owner", "--no-privileges", "--inserts"],
                capture_output=True,
                text=True,
                env={**os.environ, "PGPASSWORD": url.password or ""},
                timeout=120,
            )
        except OSError:  # no pg_dump: migrate each schema
            return None
        finally:
            await pg_sql(f'DROP SCHEMA "{TEMPLATE}" CASCADE')
        if dumped.returncode != 0:
            return None
        # Without comments and psql's meta-commands (\restrict): plain SQL, one round trip.
        lines = dumped.stdout.splitlines()
        return "\n".join(x for x in lines if not x.startswith(("--", "\\")))


async def pg_sql(script: str) -> None:
    """Run SQL statements (several: asyncpg's simple query protocol) on the test server."""
    engine = create_async_engine(PG_URL)
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute(script)
    finally:
        await engine.dispose()


# The migrated schema pg_dump reads: a name no test schema or table name contains.
TEMPLATE = f"mrb_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates(tmp_path_factory.mktemp("templates"))


DB_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DB_KINDS)
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, db_templates: Templates
) -> AsyncIterator[Db]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema (copies of
    a migrated one, see Templates)."""
    async with migrated_db(request.param, tmp_path, db_templates) as made:
        yield made


@asynccontextmanager
async def migrated_db(kind: str, directory: Path, templates: Templates) -> AsyncIterator[Db]:
    """What the `db` fixture yields, for fixtures of a wider scope."""
    if kind == "sqlite":
        await templates.sqlite_copy(directory / "mrb.db")
        yield Db("sqlite", f"sqlite+aiosqlite:///{directory / 'mrb.db'}", None)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        await templates.pg_schema(schema)
    except OSError as exc:  # no server: say so instead of a confusing failure later
        pytest.fail(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    try:
        yield Db("postgres", PG_URL, schema)
    finally:
        await pg_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def settings(db: Db, tmp_path: Path) -> Settings:
    return settings_for(db, tmp_path)


def settings_for(db: Db, directory: Path) -> Settings:
    """The settings of the `settings` fixture, for fixtures of a wider scope."""
    return Settings(
        data_dir=directory / "data",
        database_url=db.url,
        database_schema=db.schema,
        http_port=free_port(),
        metrics_port=free_port(),
        embedded_kafka_port=free_port(),
        consumer_session_timeout_ms=2000,  # joins the group in ~1 s instead of ~5 s
        create_keys=True,
    )


async def seed_hospitals(c: Container, *registered: hospitals.Hospital | str) -> None:
    """Register hospitals (a Hospital, or an id: a level-3 hospital of region 510502) with
    the signing key the factories sign with, in one transaction."""
    async with c.sessions() as session, session.begin():
        for h in registered:
            if isinstance(h, str):
                h = hospitals.Hospital(h, h, "510502", "3")
            await hospitals.add(session, h)
            await hospitals.add_key(
                session, h.id, factories.key_id(h.id), factories.public_b64(h.id)
            )


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    c = Container.build(settings)
    await seed_hospitals(
        c,
        hospitals.Hospital("H001", "Hospital H001", "510502", "3"),
        hospitals.Hospital("H002", "Hospital H002", "510521", "2"),
    )
    yield c
    await c.close()


@pytest.fixture
async def kafka() -> AsyncIterator[str]:
    """A real Tansu broker on a free port, with mrb's topics; gone after the test."""
    broker = EmbeddedKafka(free_port())
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, default_partitions(3))
        yield broker.bootstrap
    finally:
        await broker.stop()


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"shared real-data corpus not found at {REALDATA}")
    return REALDATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under integration/ and e2e/ carry their marker without repeating it."""
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@asynccontextmanager
async def running_worker(container: Container, bootstrap: str) -> AsyncIterator[None]:
    """An ingest worker on `bootstrap` for the duration of the block (its errors surface)."""
    container.kafka_bootstrap = bootstrap
    stop = asyncio.Event()
    task = asyncio.create_task(container.ingest_worker().run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def bearer(
    container: Container, role: str = "doctor", hospital: str = "H002", subject: str | None = None
) -> dict[str, str]:
    """An Authorization header with a token the container's API accepts: issued and
    recorded through the container, which in these tests (as in `mrb up`) holds the
    issuer key."""
    issued = await container.issue_token(
        subject or f"{role}-{hospital}", Role(role), hospital, by="tests"
    )
    return {"Authorization": f"Bearer {issued.token}"}


@asynccontextmanager
async def api_client(
    stack: Stack, role: str = "doctor", hospital: str = "H002", subject: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the running stack, authenticated as `role` of `hospital`."""
    headers = await bearer(stack.container, role, hospital, subject)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as client:
        yield client


async def certify(
    container: Container,
    hospital: str = "H001",
    scope: str = "HEMATOLOGY",
    valid_to: date = date(2026, 12, 31),
) -> None:
    """A provincial EQA certification, in force from 2026-01-01."""
    async with container.sessions() as session, session.begin():
        await hospitals.certify(
            session,
            Certification(
                hospital, scope, CertifyingBody.PROVINCIAL_EQA, date(2026, 1, 1), valid_to
            ),
            reference=None,
        )


async def adapter_env(stack: Stack, tmp_path: Path, hospital: str = "H001") -> dict[str, str]:
    """The environment of a hospital's adapter process: its own data dir and signing key
    (registered at the broker), the broker's receipt key, and the stack's Kafka."""
    key_id, public = create_key(tmp_path / "adapter" / "keys", hospital)
    await registry_service.add_key(
        stack.container.registry_uow(), hospital, key_id, public, by=PLATFORM_ADMIN
    )
    return {
        **os.environ,
        "MRB_KAFKA_BOOTSTRAP": stack.container.kafka_bootstrap or "",
        "MRB_DATA_DIR": str(tmp_path / "adapter"),
        "MRB_RECEIPT_PUBLIC_KEYS": factories.receipt_public_keys(stack.container.settings.keys_dir),
        "COLUMNS": "300",  # rich wraps tables to the terminal width
    }
