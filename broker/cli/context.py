"""Running one admin command against the database: settings, checks, a container."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.state import StateMissing, announce, require_state
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import Refused
from broker.observability import configure_logging
from broker.security.keys import MissingKey
from broker.services.registry import RegistryError
from broker.settings import Settings

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)


def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run `work` with a container on the existing, up-to-date database and keys (never
    creating them: see broker/cli/state.py); refusals exit 2 with the cause."""
    settings = Settings()
    configure_logging(settings.log_level, settings=settings)
    announce(settings)
    # An admin command never creates keys (a wrong folder would get fresh ones); the
    # embedded set-up's default audit export stays where it is.
    settings.audit_export = settings.resolved_audit_export
    settings.create_keys = False

    async def main() -> T:
        await require_state(settings, keys=True)
        container = Container.build(settings)
        try:
            return await work(container)
        finally:
            await container.close()

    try:
        return asyncio.run(main())
    except (RegistryError, ValueError, Forbidden, MissingKey, StateMissing) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except Refused as exc:
        err.print(f"[red]error:[/red] {exc.title}: {exc.detail}")
        raise typer.Exit(2) from None


BY_HELP = "Who does this (recorded and audited); default: $MRB_OPERATOR, else the login name."


def operator(role: Role, by: str | None) -> Actor:
    """The person running a CLI command, acting in the platform role the command needs.

    The CLI runs where the database and keys are, so its operator holds every platform
    duty there; what it records is who acted (--by, MRB_OPERATOR or the login name).
    """
    name = (by or os.environ.get("MRB_OPERATOR") or _login()).strip()
    if not name:
        raise typer.BadParameter("say who you are with --by NAME (it is recorded)")
    return Actor(name, role, ALL_HOSPITALS)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry for this uid (some containers)
        return ""
