"""Admin commands act only on existing state, and say which folder and database."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from broker.cli.main import app
from broker.storage.database import alembic_config
from tests.conftest import PG_URL

runner = CliRunner()
TOKEN = ["token", "issue", "--role", "doctor", "--hospital", "H001", "--subject", "dr.li"]
# One of every kind: the registry, tokens, reports, the DLQ, keys on the database, CDS.
ADMIN = [
    TOKEN,
    ["hospital", "list"],
    ["report", "savings"],
    ["dlq", "list"],
    ["keys", "usage"],
    ["cds", "list"],
    ["audit", "verify"],
]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def refused(args: list[str], env: dict[str, str]) -> str:
    """The command's one error line (exit 2); the folder-and-database line is stderr too."""
    out = runner.invoke(app, ["--quiet", *args], env={**env, "COLUMNS": "300"})
    assert out.exit_code == 2, (args, out.output)
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.output, (args, out.output)
    return lines[0]


def test_a_wrong_folder_or_missing_database_is_refused_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    nowhere = tmp_path / "nowhere"
    for args in ADMIN:
        line = refused(args, {"MRB_DATA_DIR": str(nowhere)})
        assert line.startswith("error: ") and str(nowhere) in line, line
    assert not nowhere.exists()

    # The folder exists (keys made), the database does not: `mrb db upgrade` is the fix.
    data = tmp_path / "data"
    env = {"MRB_DATA_DIR": str(data)}
    assert runner.invoke(app, ["keys", "init"], env=env).exit_code == 0
    before = listing(data)
    for args in ADMIN:
        line = refused(args, env)
        assert f"no database at {data.resolve() / 'mrb.db'}" in line, line
        assert "run `mrb db upgrade`" in line
    assert listing(data) == before

    # A database one migration behind: refused too, naming both revisions.
    command.upgrade(alembic_config(f"sqlite+aiosqlite:///{data / 'mrb.db'}"), "0014")
    line = refused(["hospital", "list"], env)
    (head,) = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert f"is at migration 0014, this mrb needs {head}: run `mrb db upgrade`" in line

    # Upgraded: the command runs and names what it acts on (stderr), unless --quiet.
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    said = runner.invoke(app, ["hospital", "list"], env=env)
    assert said.exit_code == 0, said.output
    url = f"sqlite+aiosqlite:///{(data / 'mrb.db').resolve()}"
    assert f"mrb: data folder {data.resolve()}, database {url}" in said.stderr
    assert "mrb: data folder" not in said.stdout
    for quiet in (["--quiet", "hospital", "list"], ["-q", "hospital", "list"]):
        assert runner.invoke(app, quiet, env=env).stderr == ""
    assert runner.invoke(app, ["hospital", "list"], env={**env, "MRB_QUIET": "1"}).stderr == ""

    # Keys missing beside a database: refused, none made.
    (data / "keys" / "pseudonym.key").unlink()
    before = listing(data)
    assert "no broker keys in" in refused(TOKEN, env)
    assert listing(data) == before


@pytest.mark.postgres
async def test_a_postgres_schema_that_was_never_migrated_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    assert runner.invoke(app, ["keys", "init"], env={"MRB_DATA_DIR": str(data)}).exit_code == 0
    schema = f"t_{uuid.uuid4().hex[:12]}"  # never created
    # Trust auth ignores the password; it must not be printed all the same.
    with_password = make_url(PG_URL).set(password="s3cret").render_as_string(hide_password=False)
    env = {
        "MRB_DATA_DIR": str(data),
        "MRB_DATABASE_URL": with_password,
        "MRB_DATABASE_SCHEMA": schema,
        "COLUMNS": "300",
    }
    out = await asyncio.to_thread(runner.invoke, app, ["hospital", "list"], env=env)
    assert out.exit_code == 2, out.output
    said, error = [line for line in out.stderr.splitlines() if line.strip()]
    assert said.startswith(f"mrb: data folder {data.resolve()}, database postgresql")
    assert f"(schema {schema})" in said and "***" in said and "s3cret" not in out.output
    assert error.startswith("error: the database postgresql") and "has no mrb schema" in error
    engine = create_async_engine(PG_URL)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                {"s": schema},
            )
            assert found.first() is None  # nothing created on the server
    finally:
        await engine.dispose()
