"""Running one CLI command against the database: settings, migrations, a container."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.observability import configure_logging
from broker.security.keys import MissingKey
from broker.services.errors import ServiceError
from broker.services.registry import RegistryError
from broker.settings import Settings
from broker.storage.database import upgrade

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)


def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run `work` with a container on an up-to-date database; refusals exit 2 with the cause."""
    settings = Settings()
    configure_logging(settings.log_level)

    async def main() -> T:
        await upgrade(settings.resolved_database_url, settings.database_schema)
        container = Container.build(settings)
        try:
            return await work(container)
        finally:
            await container.close()

    try:
        return asyncio.run(main())
    except (RegistryError, ValueError, Forbidden, MissingKey) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ServiceError as exc:
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
