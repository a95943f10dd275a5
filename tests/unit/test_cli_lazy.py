"""`mrb --help` lists every sub-command from broker/cli/main.py's table without importing
it (tests/e2e/test_cli_start.py); here, that table says what the commands say."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from broker.cli import main
from broker.cli.lazy import Deferred, listed, load, one_line

runner = CliRunner()


def _table(group: typer.Typer) -> list[tuple[str, str, str]]:
    """(name, target, one-line help) of each deferred sub-command of a typer app."""
    command = typer.main.get_command(group)
    assert isinstance(command, typer.core.TyperGroup)
    deferred: Deferred = command.deferred  # type: ignore[attr-defined]
    return [(p.name or "", p.target, p.help or "") for p in deferred.placeholders()]


DEFERRED = [*_table(main.app), *_table(main.keys_app)]


@pytest.mark.parametrize(("name", "target", "help"), DEFERRED, ids=[d[0] for d in DEFERRED])
def test_the_listed_help_is_the_commands_own(name: str, target: str, help: str) -> None:
    command = load(name, target)
    assert command.name == name
    assert one_line(help) == one_line(command.short_help or command.help)


def test_help_lists_every_command_with_its_line() -> None:
    out = runner.invoke(main.app, ["--help"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    root = typer.main.get_command(main.app)
    assert isinstance(root, typer.core.TyperGroup)
    rows = listed(root, typer.Context(root))
    assert {n for n, _ in rows} >= {"up", "serve", "worker", "demo", "db", "keys", "token"}
    for name, line in rows:
        assert f"{name} " in out.output and line in out.output, name


def test_a_deferred_group_runs_and_shows_its_own_help() -> None:
    out = runner.invoke(main.app, ["keys", "--help"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    for name in ("init", "token-issuer", "rotate", "show-receipt-key"):
        assert name in out.output
    token = runner.invoke(main.app, ["token", "issue", "--help"], env={"COLUMNS": "400"})
    assert token.exit_code == 0 and "--role" in token.output and "--subject" in token.output


def test_an_unknown_command_is_refused() -> None:
    out = runner.invoke(main.app, ["tokn"])
    assert out.exit_code == 2 and "No such command" in out.output
