"""Files mrb creates are its owner's alone: data dir, keys, SQLite database."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli.main import app
from broker.runtime import private_sqlite_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask like a login shell's, restored afterwards."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_cli_creates_the_data_dir_keys_and_database_owner_only(
    tmp_path: Path, open_umask: None
) -> None:
    data = tmp_path / "var"
    env = {"MRB_DATA_DIR": str(data), "MRB_DATABASE_URL": "", "MRB_LOG_LEVEL": "WARNING"}
    runner = CliRunner()
    keys = runner.invoke(app, ["keys", "init"], env=env)
    assert keys.exit_code == 0, keys.output
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output

    key_files = sorted((data / "keys").glob("*.key"))
    assert len(key_files) >= 5
    assert {p.name: mode(p) for p in key_files} == {p.name: 0o600 for p in key_files}
    assert mode(data) == 0o700 and mode(data / "keys") == 0o700
    assert mode(data / "mrb.db") == 0o600
    # And a file written after start, as a command's own output would be.
    (data / "later.txt").write_text("x")
    assert mode(data / "later.txt") == 0o600


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "mrb.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    wal = tmp_path / "mrb.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o664)
    assert private_sqlite_file(f"sqlite+aiosqlite:///{db}") == db
    assert mode(db) == 0o600 and mode(wal) == 0o600


def test_a_new_database_file_is_created_owner_only(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "new" / "mrb.db"
    assert private_sqlite_file(f"sqlite+aiosqlite:///{db}") == db
    assert db.exists() and mode(db) == 0o600


@pytest.mark.parametrize(
    "url",
    ["postgresql+asyncpg://u@h/db", "sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"],
)
def test_other_databases_are_left_alone(url: str) -> None:
    assert private_sqlite_file(url) is None
