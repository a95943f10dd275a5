"""`mrb backup` / `mrb restore` round trips on SQLite and PostgreSQL: ingest, check,
back up, wipe, restore; the same check answers the same and the audit trail verifies."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from broker.bootstrap import Container
from broker.cli.main import app
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from broker.settings import Settings
from broker.storage.database import alembic_config
from tests import factories as f
from tests.conftest import Db, certify

runner = CliRunner()
HB = Order(system=f.LOINC, code="718-7")


def env(db: Db, settings: Settings, **extra: str) -> dict[str, str]:
    out = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": db.url,
        "MRB_AUDIT_EXPORT": str(settings.data_dir.parent / "audit-export.jsonl"),
        "COLUMNS": "300",
        **extra,
    }
    if db.schema:
        out["MRB_DATABASE_SCHEMA"] = db.schema
    return out


async def check(c: Container) -> tuple[str, tuple[str, str, str, str] | None]:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
        Actor("dr-li", Role.DOCTOR, "H002"),
    )
    d = answer.items[0].decision
    v = d.candidate
    return d.decision.value, (v.result_id, v.hospital, v.status, v.summary) if v else None


async def wipe(db: Db) -> None:
    """Lose the database: the SQLite file, or every table of the PostgreSQL schema."""
    if db.schema is None:
        path = Path(db.url.split("///", 1)[1])
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
        return
    engine = create_async_engine(db.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
            await conn.execute(text(f'CREATE SCHEMA "{db.schema}"'))
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_backup_wipe_restore_answers_the_same(
    db: Db, settings: Settings, container: Container, tmp_path: Path
) -> None:
    await certify(container)
    ingest = container.ingest_service()
    messages = [
        f.inbound(f.lab_bundle(accession="B1")),
        f.inbound(f.lab_bundle(accession="B2", status="amended", hb=12.1)),
        f.inbound(f.lab_bundle(accession="B3", pat=f.patient(f.PATIENT_B, "MRN-2", pid="p2"))),
    ]
    assert {p.outcome.value for p in await ingest.process_batch(messages)} == {"indexed"}
    before = await check(container)
    assert before[0] == "RECOGNIZABLE"
    e = env(db, settings)
    if not (settings.keys_dir / "audit-checkpoint.key").exists():  # PostgreSQL: the sealer's
        made = await asyncio.to_thread(runner.invoke, app, ["audit", "key"], env=e)
        assert made.exit_code == 0, made.output
    sealed = await asyncio.to_thread(runner.invoke, app, ["audit", "seal"], env=e)
    assert sealed.exit_code == 0, sealed.output

    dest = tmp_path / "backups" / "mrb.backup"
    dest.parent.mkdir()
    made = await asyncio.to_thread(runner.invoke, app, ["backup", str(dest)], env=e)
    assert made.exit_code == 0, made.output
    assert "payload-k1.key: " in made.stdout and "pseudonym.key" in made.stdout
    again = await asyncio.to_thread(runner.invoke, app, ["backup", str(dest)], env=e)
    assert again.exit_code == 2 and "never overwrites" in again.output
    refused = await asyncio.to_thread(runner.invoke, app, ["restore", str(dest)], env=e)
    assert refused.exit_code == 2 and "holds data" in refused.output, refused.output

    await container.close()
    await wipe(db)
    restored = await asyncio.to_thread(runner.invoke, app, ["restore", str(dest)], env=e)
    assert restored.exit_code == 0, restored.output
    assert "migrated it to the latest schema" in restored.stdout

    c = Container.build(settings)
    try:
        assert await check(c) == before
    finally:
        await c.close()
    pin = (settings.keys_dir / "audit-checkpoint.pub").read_text().strip()
    for step in (["audit", "seal"], ["audit", "verify"]):
        done = await asyncio.to_thread(
            runner.invoke, app, step, env={**e, "MRB_AUDIT_CHECKPOINT_PUBLIC_KEY": pin}
        )
        assert done.exit_code == 0, done.output
    assert "the audit trail is intact" in done.stdout

    forced = await asyncio.to_thread(runner.invoke, app, ["restore", "--force", str(dest)], env=e)
    assert forced.exit_code == 0, forced.output  # back to the backup's state, on purpose


def test_an_older_backup_is_upgraded_and_wrong_files_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{old}"), "0013")
    e = {"MRB_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "300"}
    restored = runner.invoke(app, ["restore", str(old)], env=e)
    assert restored.exit_code == 0, restored.output
    with sqlite3.connect(tmp_path / "data" / "mrb.db") as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version >= "0014"

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a backup at all")
    refused = runner.invoke(app, ["restore", "--force", str(junk)], env=e)
    assert refused.exit_code == 2 and "is not an mrb backup" in refused.output
    missing = runner.invoke(app, ["backup", str(tmp_path / "nowhere" / "b.db")], env=e)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    pg = {**e, "MRB_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test"}
    kind = runner.invoke(app, ["restore", "--force", str(old)], env=pg)
    assert kind.exit_code == 2 and "restore it into the same kind of database" in kind.output
