"""`mrb purge payloads`: erase raw payloads past the retention policy; `mrb purge results`:
remove results past their category's retention period (schemas/catalog/retention.yaml)
from the index and the FHIR search facade. Both audited."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.services.retention import DEFAULT_BATCH, ResultPurge, purge_payloads, purge_results
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


@app.command("results")
def results(
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Count what would be removed; change and audit nothing."),
    ] = False,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            metavar="N",
            help="Results removed per transaction (each batch audited with it).",
        ),
    ] = DEFAULT_BATCH,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Remove results past their category's retention period (schemas/catalog/retention.yaml,
    docs/retention.md) from the index, so checks no longer recognise from them, and from
    /fhir (search and read no longer find them), with the payloads no other result shares.
    The ledger keeps its sums and the audit trail its entries. Audited as result.purge, one
    entry per batch; running it again removes nothing more."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> ResultPurge:
        policy = c.retention_policy()
        catalog = c.reference_rules().catalog
        return await purge_results(
            c.result_purge_uow(), policy, catalog, by=actor, batch=batch, dry_run=dry_run
        )

    done = with_container(work)
    verb = "would remove" if done.dry_run else "removed"
    console.print(
        f"{verb} {done.results} result(s) past retention (policy {done.policy})"
        + ("" if done.dry_run else f" and {done.payloads} payload(s) no other result shares")
    )
    for category, count in done.by_category.items():
        console.print(f"  {category}: {count}")
    if not done.dry_run:
        console.print("the ledger and the audit trail stay")
