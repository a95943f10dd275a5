"""`mrb token issue`: API bearer tokens for people and systems, one role and hospital each."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.context import with_container
from broker.domain.actors import ALL_HOSPITALS, Role
from broker.storage import hospitals as registry

app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("issue")
def issue(
    role: Annotated[Role, typer.Option(help="adapter, doctor, finance or admin.")],
    hospital: Annotated[
        str, typer.Option(help="The hospital the holder acts for; '*' = platform-wide.")
    ],
    subject: Annotated[
        str, typer.Option(help="Who holds it (a staff number or system name); audited.")
    ] = "",
    hours: Annotated[float, typer.Option(help="Lifetime in hours.", min=0.01)] = 8.0,
) -> None:
    """Print a token for `Authorization: Bearer …` (nothing else on stdout, for scripts)."""
    name = subject or f"{role.value}@{hospital}"

    async def work(container: Container) -> str:
        if hospital != ALL_HOSPITALS:
            async with container.sessions() as s:
                if await registry.get(s, hospital) is None:
                    raise ValueError(
                        f"hospital {hospital!r} is not registered; see `mrb hospital list`"
                    )
        return container.tokens().issue(name, role, hospital, ttl=timedelta(hours=hours))

    token = with_container(work)
    err.print(f"token for {name} ({role.value}, {hospital}), valid {hours:g} h:")
    console.print(token)
