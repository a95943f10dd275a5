"""`mrb hospital add|list|certify`: the registry the rules depend on."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.domain.registry import Certification
from broker.services import registry as registry_service
from broker.storage import hospitals as registry

app = typer.Typer(help="The hospital registry.", no_args_is_help=True)
key_app = typer.Typer(help="Hospitals' public signing keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command("add")
def add(
    hospital_id: Annotated[str, typer.Argument(help="Registry id, e.g. H001.")],
    name: Annotated[str, typer.Option(help="Full name, e.g. 泸州市人民医院.")],
    region: Annotated[str, typer.Option(help="GB/T 2260 code, e.g. 510502.")],
    level: Annotated[str, typer.Option(help="1, 2 or 3 (一级/二级/三级).")],
    grade: Annotated[str | None, typer.Option(help="甲 or 乙 (A/B).")] = None,
    ownership: Annotated[str, typer.Option(help="public (公立) or private (民营).")] = "public",
    price_tier: Annotated[str | None, typer.Option(help="1-3; defaults to the level.")] = None,
    alliance: Annotated[
        list[str] | None, typer.Option(help="Alliance id (医联体/医共体); repeatable.")
    ] = None,
    timezone: Annotated[str, typer.Option(help="Zone for timestamps sent without one.")] = (
        "Asia/Shanghai"
    ),
    replace: Annotated[bool, typer.Option(help="Update it if it exists.")] = False,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Register a hospital (messages from unregistered hospitals go to the DLQ)."""
    actor = operator(Role.PLATFORM_ADMIN, by)
    h = registry.Hospital(
        hospital_id,
        name,
        region,
        level,
        grade=grade,
        ownership=ownership,
        price_tier=price_tier,
        alliances=frozenset(alliance or ()),
        timezone=timezone,
    )

    async def work(c: Container) -> registry.Hospital:
        return await registry_service.register(c.registry_uow(), h, by=actor, replace=replace)

    try:
        with_container(work)
    except registry.HospitalExists:
        err.print(f"[red]{hospital_id} is already registered[/red] (use --replace to update)")
        raise typer.Exit(1) from None
    console.print(f"registered {hospital_id}")


@app.command("list")
def list_() -> None:
    """List registered hospitals with their certifications."""

    async def work(c: Container) -> tuple[list[registry.Hospital], list[Certification]]:
        async with c.sessions() as s:
            return await registry.list_all(s), await registry.certifications(s)

    hospitals, certs = with_container(work)
    table = Table("id", "name", "region", "level", "ownership", "tier", "alliances", "QC")
    for h in hospitals:
        held = [c for c in certs if c.hospital == h.id]
        table.add_row(
            h.id,
            h.name,
            h.region,
            f"{h.level}{h.grade or ''}",
            h.ownership,
            h.price_tier or h.level,
            ",".join(sorted(h.alliances)),
            "; ".join(f"{c.scope} {c.body} {c.valid_from}..{c.valid_to}" for c in held) or "-",
        )
    console.print(table)


@app.command("certify")
def certify(
    hospital_id: Annotated[str, typer.Argument(help="Registered hospital id.")],
    scope: Annotated[str, typer.Option(help="Catalog item (LAB-HGB) or QC group (HEMATOLOGY).")],
    body: Annotated[
        str,
        typer.Option(
            help="national-eqa | provincial-eqa | provincial-imaging-qc | city-eqa | "
            "city-imaging-qc."
        ),
    ],
    valid_from: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"])],
    valid_to: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"])],
    reference: Annotated[str | None, typer.Option(help="Certificate number.")] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Record a QC certification (室间质评/影像质控) valid from..to inclusive."""
    actor = operator(Role.QC, by)

    async def work(c: Container) -> None:
        cert = registry_service.certification(
            c.reference_rules().catalog, hospital_id, scope, body, _day(valid_from), _day(valid_to)
        )
        await registry_service.certify(c.registry_uow(), cert, reference, by=actor)

    with_container(work)
    console.print(
        f"certified {hospital_id} for {scope} ({body}) {valid_from:%Y-%m-%d}..{valid_to:%Y-%m-%d}"
    )


def _day(d: datetime) -> date:
    return d.date()


@key_app.command("add")
def key_add(
    hospital_id: Annotated[str, typer.Argument(help="Registered hospital id.")],
    key_id: Annotated[str, typer.Option(help="The id `mrb keys init --hospital` printed.")],
    public_key: Annotated[str, typer.Option(help="Base64 of the Ed25519 public key.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Register a hospital's public key; older keys stay valid until revoked (rotation)."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> None:
        await registry_service.add_key(c.registry_uow(), hospital_id, key_id, public_key, by=actor)

    with_container(work)
    console.print(f"registered key {key_id} for {hospital_id}")


@key_app.command("revoke")
def key_revoke(
    hospital_id: Annotated[str, typer.Argument(help="Registered hospital id.")],
    key_id: Annotated[str, typer.Option(help="The key to revoke.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Revoke a key: every message signed with it is refused from now on (REVOKED_KEY)."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> None:
        await registry_service.revoke_key(c.registry_uow(), hospital_id, key_id, by=actor)

    with_container(work)
    console.print(f"revoked key {key_id} of {hospital_id}")


@key_app.command("list")
def key_list() -> None:
    """List registered keys and whether they are revoked."""

    async def work(c: Container) -> list[registry.SigningKey]:
        async with c.sessions() as s:
            return list((await registry.signing_keys(s)).values())

    table = Table("hospital", "key id", "added", "revoked")
    for k in sorted(with_container(work), key=lambda k: (k.hospital, k.key_id)):
        revoked = f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-"
        table.add_row(k.hospital, k.key_id, f"{k.added_at:%Y-%m-%d %H:%M}", revoked)
    console.print(table)
