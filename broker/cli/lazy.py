"""Sub-commands imported on first use, so that `mrb --help` and a light command start in
a fraction of a second instead of importing every command's dependencies.

A `Deferred` table holds, per sub-command, where it is (`"module:attribute"`, a typer
app or a command function) and its one-line help, which `--help` lists without importing
anything; the module is imported only when that command runs (or its own `--help` is
asked for). tests/unit/test_cli_lazy.py checks that each one-line help matches the
command's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import typer
from typer import _click as click  # typer 0.29 vendors click: its groups take these classes
from typer.core import TyperCommand, TyperGroup


class _Placeholder(TyperCommand):
    """What `--help` lists for a command not imported yet: its name and one-line help."""

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = target


class Deferred:
    """The sub-commands of one typer app that are imported when they are used."""

    def __init__(self) -> None:
        self._targets: dict[str, tuple[str, str]] = {}

    def add(self, name: str, target: str, help: str) -> None:
        """`target` is `"package.module:attribute"`: a `typer.Typer` or a command function."""
        self._targets[name] = (target, help)

    def placeholders(self) -> list[_Placeholder]:
        return [_Placeholder(n, t, h) for n, (t, h) in self._targets.items()]

    def group(self) -> type[TyperGroup]:
        """The click group class for `typer.Typer(cls=...)`."""
        table = self

        class Group(_DeferringGroup):
            deferred = table

        return Group


class _DeferringGroup(TyperGroup):
    deferred: Deferred

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for placeholder in self.deferred.placeholders():
            self.commands.setdefault(str(placeholder.name), placeholder)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Running (or completing) a command: now import it and stand it in for its
        # placeholder. Listing commands in --help goes through get_command and does not.
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Placeholder) and name is not None:
            command = load(name, command.target)
            self.commands[name] = command
        return name, command, rest


def load(name: str, target: str) -> click.Command:
    """Import `target` ("module:attribute") and make it the click command `name`."""
    module, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if isinstance(found, typer.Typer):
        # As `add_typer` builds it (get_command would add the root's completion options).
        command: click.Command = typer.main.get_group(found)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(found)
        command = typer.main.get_command(single)
    command.name = name
    return command


def one_line(help: str | None) -> str:
    """The first paragraph of a help text on one line, as the command list shows it."""
    return " ".join((help or "").split("\n\n")[0].split())


def listed(group: TyperGroup, ctx: click.Context) -> Sequence[tuple[str, str]]:
    """(name, one-line help) of every command `--help` lists, without importing any."""
    rows = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            rows.append((name, one_line(command.short_help or command.help)))
    return rows
