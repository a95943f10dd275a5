"""`mrb mapping unmapped|add|list`: the local codes hospital IT maps to catalog items."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.services import mappings as mapping_service
from broker.storage import mappings

app = typer.Typer(help="Local-code mappings and the unmapped-code worklist.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("unmapped")
def unmapped(
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include codes mapped since.")] = False,
) -> None:
    """Local codes seen in results that map to no catalog item, most frequent first."""

    async def work(c: Container) -> list[mappings.Unmapped]:
        async with c.sessions() as s:
            return await mappings.worklist(s, hospital, include_mapped=all_)

    rows = with_container(work)
    if not rows:
        console.print("the worklist is empty: every local code seen is mapped")
        return
    table = Table("hospital", "system", "code", "display", "seen", "last seen", "mapped to")
    for r in rows:
        table.add_row(
            r.hospital,
            r.system,
            r.code,
            r.display or "",
            str(r.occurrences),
            r.last_seen.date().isoformat(),
            r.mapped_to or "",
        )
    console.print(table)
    console.print(
        "map one with: mrb mapping add --hospital H --system SYSTEM --code CODE --item LAB-…"
    )


@app.command("add")
def add(
    hospital: Annotated[str, typer.Option(help="The hospital whose code it is.")],
    system: Annotated[str, typer.Option(help="Its code system URI.")],
    code: Annotated[str, typer.Option(help="The local code.")],
    item: Annotated[str, typer.Option(help="The catalog item code, e.g. LAB-HGB.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Map a local code; running brokers use it from their next request, no restart."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> int:
        return await mapping_service.add_mapping(
            c.mapping_uow(),
            c.reference_rules().catalog,
            hospital=hospital,
            system=system,
            code=code,
            catalog_code=item,
            by=actor,
        )

    covered = with_container(work)
    console.print(
        f"mapped {hospital} {system}|{code} -> {item}; {covered} indexed result(s) carry it"
    )


@app.command("list")
def list_(hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None) -> None:
    """Mappings added at run time (the YAML ones are in schemas/catalog/mappings/)."""

    async def work(c: Container) -> dict[tuple[str, str, str], str]:
        async with c.sessions() as s:
            return await mappings.all_mappings(s)

    table = Table("hospital", "system", "code", "item")
    for (h, s, c), target in sorted(with_container(work).items()):
        if hospital is None or h == hospital:
            table.add_row(h, s, c, target)
    console.print(table)
