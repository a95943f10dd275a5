"""Running one CLI command against the database: settings, migrations, a container."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.observability import configure_logging
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
    except (RegistryError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except ServiceError as exc:
        err.print(f"[red]error:[/red] {exc.title}: {exc.detail}")
        raise typer.Exit(2) from None
