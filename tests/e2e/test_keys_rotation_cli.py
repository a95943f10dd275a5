"""`mrb keys rotate | reencrypt | usage` from the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from broker.cli.main import app

runner = CliRunner()


def test_rotate_adds_the_next_key_and_reports_usage(tmp_path: Path) -> None:
    env = {"MRB_DATA_DIR": str(tmp_path), "MRB_CREATE_KEYS": "true", "COLUMNS": "200"}
    assert runner.invoke(app, ["keys", "init"], env=env).exit_code == 0
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    rotated = runner.invoke(app, ["keys", "rotate"], env=env)
    assert rotated.exit_code == 0, rotated.output
    assert "payload key k2 is active" in rotated.output and "re-sealed 0 rows" in rotated.output
    assert (tmp_path / "keys" / "payload-k2.key").stat().st_mode & 0o077 == 0
    usage = runner.invoke(app, ["keys", "usage"], env=env)
    assert usage.exit_code == 0 and "k2: 0 rows (active)" in usage.output
    assert "k1: 0 rows (no stored row needs it" in usage.output
    again = runner.invoke(app, ["keys", "rotate", "--no-reencrypt"], env=env)
    assert again.exit_code == 0 and "k3 is active" in again.output
    assert runner.invoke(app, ["keys", "reencrypt"], env=env).exit_code == 0
