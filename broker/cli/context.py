"""Running one admin command against the database: settings, checks, a container.

What a command needs is imported when it runs, not when the CLI starts (broker/cli/lazy.py):
`with_container` builds the whole composition root; `with_register` only the database
and the token issuer, so `mrb token …` does not import the API, Kafka or FHIR stacks.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console

from broker.domain.actors import ALL_HOSPITALS, Actor, Role

if TYPE_CHECKING:
    from broker.bootstrap import Container
    from broker.security.tokens import TokenIssuer
    from broker.settings import Settings
    from broker.storage.access_uow import SqlAccessUnitOfWork
    from broker.storage.database import Engine, Sessions

T = TypeVar("T")
S = TypeVar("S")
err = Console(stderr=True, soft_wrap=True)


def with_container(work: Callable[[Container], Awaitable[T]]) -> T:
    """Run `work` with a container on the existing, up-to-date database and keys (never
    creating them: see broker/cli/state.py); refusals exit 2 with the cause."""
    from broker.bootstrap import Container

    async def close(container: Container) -> None:
        await container.close()

    return _on_database(Container.build, close, work)


@dataclass(frozen=True)
class Register:
    """The token register's side of the broker: its database and the token issuer."""

    settings: Settings
    engine: Engine
    sessions: Sessions

    def access_uow(self) -> SqlAccessUnitOfWork:
        from broker.storage.access_uow import SqlAccessUnitOfWork

        return SqlAccessUnitOfWork(self.sessions)

    def token_issuer(self) -> TokenIssuer:
        """Signs tokens: only where keys/token-issuer.key is (MissingKey elsewhere), as
        `Container.token_issuer` (an admin command never creates it)."""
        from broker.security.tokens import TokenIssuer, load_issuer_key

        key = load_issuer_key(self.settings.keys_dir, create=self.settings.may_create_keys)
        return TokenIssuer(key, self.settings.token_lifetimes)


def with_register(work: Callable[[Register], Awaitable[T]]) -> T:
    """`with_container` for the token commands: the same checks, a lighter composition."""
    from broker.storage.database import create_engine, session_factory

    def build(settings: Settings) -> Register:
        engine = create_engine(settings.resolved_database_url, schema=settings.database_schema)
        return Register(settings, engine, session_factory(engine))

    async def close(register: Register) -> None:
        await register.engine.dispose()

    return _on_database(build, close, work)


def _on_database(
    build: Callable[[Settings], S],
    close: Callable[[S], Awaitable[None]],
    work: Callable[[S], Awaitable[T]],
) -> T:
    import asyncio  # here, not at start: `mrb token --help` runs no loop

    from broker.cli.state import StateMissing, announce, require_state
    from broker.domain.actors import Forbidden
    from broker.domain.errors import Refused
    from broker.logging_setup import configure_logging
    from broker.security.keys import MissingKey
    from broker.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings=settings)
    announce(settings)
    # An admin command never creates keys (a wrong folder would get fresh ones); the
    # embedded set-up's default audit export stays where it is.
    settings.audit_export = settings.resolved_audit_export
    settings.create_keys = False

    async def main() -> T:
        await require_state(settings, keys=True)
        built = build(settings)
        try:
            return await work(built)
        finally:
            await close(built)

    try:
        return asyncio.run(main())
    except (ValueError, Forbidden, MissingKey, StateMissing) as exc:  # RegistryError too
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
