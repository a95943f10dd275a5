"""`mrb audit key|seal|verify` as operators run them: the sealer host holds the key, an
auditor's host only the pinned public key and the export; tampering exits 1, named."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import delete, text
from typer.testing import CliRunner

from broker.cli.main import app
from broker.domain.actors import Actor, Role
from broker.settings import Settings
from broker.storage.audit_log import record_read
from broker.storage.database import create_engine, session_factory
from broker.storage.tables import audit_checkpoint, audit_event
from tests.conftest import Db

runner = CliRunner()
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")


def env(db: Db, data: Path, **extra: str) -> dict[str, str]:
    out = {
        "MRB_DATA_DIR": str(data),
        "MRB_DATABASE_URL": db.url,
        "MRB_CREATE_KEYS": "false",
        "COLUMNS": "300",
        **extra,
    }
    if db.schema:
        out["MRB_DATABASE_SCHEMA"] = db.schema
    return out


def run(db: Db, *statements: object, reads: int = 0) -> None:
    """Audit `reads` reads, then run `statements` (as an attacker with DDL rights)."""

    async def main() -> None:
        engine = create_engine(db.url, schema=db.schema)
        try:
            async with session_factory(engine)() as s, s.begin():
                for i in range(reads):
                    await record_read(
                        s, DOCTOR, action="fhir-read", purpose="treatment",
                        patient_pseudonym=None, person_id=f"p{i}", detail=None,
                    )  # fmt: skip
                for statement in statements:
                    await s.execute(text(statement) if isinstance(statement, str) else statement)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_the_sealer_host_and_an_auditor(db: Db, settings: Settings, tmp_path: Path) -> None:
    export = tmp_path / "log-host" / "audit-checkpoints.jsonl"
    sealer = env(db, tmp_path / "sealer", MRB_AUDIT_EXPORT=str(export))
    made = runner.invoke(app, ["audit", "key"], env=sealer)
    assert made.exit_code == 0, made.output
    pin = made.stdout.split("MRB_AUDIT_CHECKPOINT_PUBLIC_KEY=")[1].split()[0]
    assert (tmp_path / "sealer" / "keys" / "audit-checkpoint.key").exists()
    auditor = env(
        db, tmp_path / "auditor", MRB_AUDIT_EXPORT=str(export), MRB_AUDIT_CHECKPOINT_PUBLIC_KEY=pin
    )

    for n in (3, 2, 3):
        run(db, reads=n)
        sealed = runner.invoke(app, ["audit", "seal"], env=sealer)
        assert sealed.exit_code == 0 and f"sealed {n} entr" in sealed.stdout, sealed.output
    assert len(export.read_text().splitlines()) == 3
    ok = runner.invoke(app, ["audit", "verify"], env=auditor)
    assert ok.exit_code == 0 and "the audit trail is intact" in ok.stdout, ok.output
    assert "8 sealed entries" in ok.stdout and "3 exported" in ok.stdout

    refused = runner.invoke(app, ["audit", "seal"], env=auditor)
    assert refused.exit_code == 2 and "holds no sealer key" in refused.output
    unpinned = runner.invoke(app, ["audit", "verify"], env=env(db, tmp_path / "nobody"))
    assert unpinned.exit_code == 2 and "no checkpoint public key is pinned" in unpinned.output
    offline = {**auditor, "MRB_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:9/none"}
    unreachable = runner.invoke(app, ["audit", "verify"], env=offline)
    assert unreachable.exit_code == 2, unreachable.output  # 1 is for findings only
    gone = runner.invoke(
        app, ["audit", "verify", "--export", str(tmp_path / "elsewhere.jsonl")], env=auditor
    )
    assert gone.exit_code == 1 and "does not exist" in gone.stdout

    drop = {
        "postgres": (
            "DROP TRIGGER audit_event_guard ON audit_event",
            "DROP TRIGGER audit_checkpoint_guard ON audit_checkpoint",
        ),
        "sqlite": ("DROP TRIGGER audit_event_no_delete", "DROP TRIGGER audit_checkpoint_no_delete"),
    }[db.kind]
    run(
        db,
        *drop,
        delete(audit_event).where(audit_event.c.seq > 6),
        delete(audit_checkpoint).where(audit_checkpoint.c.seq > 6),
    )
    cut = runner.invoke(app, ["audit", "verify"], env=auditor)
    assert cut.exit_code == 1, cut.output
    assert "truncated: truncated since seq 7" in cut.stdout
    assert "the audit trail was altered (1 finding(s))" in cut.stdout
    run(db, reads=1)
    halted = runner.invoke(app, ["audit", "seal"], env=sealer)
    assert halted.exit_code == 1 and "checkpoints end at seq 5" in halted.output


def test_the_embedded_set_up_holds_both_keys(db: Db, settings: Settings) -> None:
    embedded = env(db, settings.data_dir, MRB_CREATE_KEYS="true")
    # `mrb keys init` makes the sealer's key too; `audit seal` would not (admin commands
    # never create keys) and derives the pinned public key from it.
    assert runner.invoke(app, ["keys", "init"], env=embedded).exit_code == 0
    run(db, reads=2)
    sealed = runner.invoke(app, ["audit", "seal"], env=embedded)
    assert sealed.exit_code == 0 and "sealed 2 entr" in sealed.stdout
    keys = settings.data_dir / "keys"
    assert (settings.data_dir / "audit-export.jsonl").read_text().count("\n") == 1
    verified = runner.invoke(app, ["audit", "verify"], env=embedded)
    assert verified.exit_code == 0 and "the audit trail is intact" in verified.stdout
    assert (keys / "audit-checkpoint.key").exists() and (keys / "audit-checkpoint.pub").exists()
