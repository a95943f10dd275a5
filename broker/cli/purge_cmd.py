"""`mrb purge payloads`: erase raw payloads past the retention policy (audited)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.services.retention import purge_payloads
from broker.settings import Settings

app = typer.Typer(help="Erase data past its retention period.", no_args_is_help=True)
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


@app.command("payloads")
def payloads(
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than",
            metavar="DAYS",
            help="Erase payloads received more than DAYS days ago (default: "
            "MRB_PAYLOAD_RETENTION_DAYS).",
        ),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Erase raw payloads (the sealed messages as received) older than the retention
    policy. The index, checks, ledger and audit trail stay; FHIR reads of a purged result
    answer 410 Gone. Audited as payload.purge."""
    days = older_than if older_than is not None else Settings().payload_retention_days
    if days < 1:
        err.print(
            "[red]error:[/red] no retention policy: give --older-than DAYS (at least 1) or set "
            "MRB_PAYLOAD_RETENTION_DAYS; 0 or unset keeps payloads forever"
        )
        raise typer.Exit(2)
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> int:
        return await purge_payloads(c.purge_uow(), days, by=actor)

    erased = with_container(work)
    console.print(
        f"erased {erased} payload(s) received more than {days} days ago; their index "
        "entries, checks, ledger and audit stay"
    )
