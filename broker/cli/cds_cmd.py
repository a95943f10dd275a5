"""`mrb cds add|fhir-servers|launch-origins|list|revoke`: the EHRs (CDS clients) allowed
to call the CDS Services, and the HIS that open the launch page (docs/his-launch.md).

Registered in broker/cli/main.py as `mrb cds`; what may be registered is checked by
broker/cdshooks/clients.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cdshooks import clients
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.ports.cds import ClientRow
from broker.storage.audit_log import record_change
from broker.storage.cds_store import SqlCdsClients

app = typer.Typer(help="CDS Hooks clients: EHRs, their JWT issuer and keys.", no_args_is_help=True)
console = Console(soft_wrap=True)


@app.command("add")
def add(
    issuer: Annotated[str, typer.Option(help="The EHR's JWT issuer (iss), e.g. its URL.")],
    hospital: Annotated[str, typer.Option(help="The hospital the EHR orders for.")],
    jwks_url: Annotated[
        str | None, typer.Option(help="The EHR's JWK Set URL (https), read and cached.")
    ] = None,
    jwks_file: Annotated[
        Path | None, typer.Option(help="A JWK Set file of public keys given out of band.")
    ] = None,
    fhir_server: Annotated[
        list[str] | None,
        typer.Option(
            help="A FHIR server base URL (https) the EHR may name as fhirServer; mrb sends "
            "the EHR's access token there only. Repeat for more; none: prefetch only."
        ),
    ] = None,
    launch_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="For a HIS that opens the launch page: the origin (https://host[:port]) of "
            "its pages that may frame it and receive its decision. Repeat for more."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Register (or update) an EHR allowed to call the CDS Services for its hospital."""
    actor = operator(Role.PLATFORM_ADMIN, by)
    jwks: dict[str, Any] | None = None
    if jwks_file is not None:
        try:
            jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot read a JWK Set from {jwks_file}: {exc}") from None

    async def work(c: Container) -> tuple[str, ...]:
        async with c.sessions() as s, s.begin():
            await clients.register_client(
                SqlCdsClients(s),
                issuer,
                hospital,
                jwks_url,
                jwks,
                fhir_servers=fhir_server or (),
                launch_origins=launch_origin or (),
                allow_http_loopback=c.settings.cds_allow_http_loopback,
                by=actor.name,
            )
            origins = _launch_origins(c, launch_origin)
            detail = {
                "issuer": issuer,
                "jwks_url": jwks_url,
                "fhir_servers": fhir_server or [],
                "launch_origins": list(origins),
            }
            await record_change(s, actor, action="cds.client.add", hospital=hospital, detail=detail)
            return origins

    origins = with_container(work)
    source = jwks_url or f"{jwks_file} (inline)"
    servers = ", ".join(fhir_server or ()) or "none (the EHR must prefetch the Patient)"
    console.print(
        f"CDS client {issuer} registered for {hospital}; keys from {source}; "
        f"FHIR servers: {servers}; launch origins: {', '.join(origins) or 'none'}"
    )


@app.command("fhir-servers")
def fhir_servers(
    issuer: Annotated[str, typer.Option(help="The EHR's JWT issuer.")],
    fhir_server: Annotated[
        list[str] | None,
        typer.Option(help="A FHIR server base URL (https); repeat; none: prefetch only."),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Replace the FHIR servers an EHR may name as fhirServer."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> bool:
        async with c.sessions() as s, s.begin():
            changed = await clients.set_fhir_servers(
                SqlCdsClients(s),
                issuer,
                fhir_server or (),
                allow_http_loopback=c.settings.cds_allow_http_loopback,
            )
            if changed:
                detail = {"issuer": issuer, "fhir_servers": fhir_server or []}
                await record_change(
                    s, actor, action="cds.client.fhir-servers", hospital=None, detail=detail
                )
            return changed

    if not with_container(work):
        console.print(f"no CDS client {issuer}")
        raise typer.Exit(1)
    console.print(f"CDS client {issuer}: FHIR servers {', '.join(fhir_server or ()) or 'none'}")


@app.command("launch-origins")
def launch_origins(
    issuer: Annotated[str, typer.Option(help="The HIS's JWT issuer.")],
    launch_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin (https://host[:port]) of the HIS pages that may frame the launch "
            "page and receive its decision; repeat; none: no page may."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Replace the origins of a HIS's pages that may embed its launch (docs/his-launch.md)."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> tuple[str, ...] | None:
        origins = _launch_origins(c, launch_origin)
        async with c.sessions() as s, s.begin():
            changed = await clients.set_launch_origins(
                SqlCdsClients(s),
                issuer,
                origins,
                allow_http_loopback=c.settings.cds_allow_http_loopback,
            )
            if not changed:
                return None
            detail = {"issuer": issuer, "launch_origins": list(origins)}
            await record_change(
                s, actor, action="cds.client.launch-origins", hospital=None, detail=detail
            )
            return origins

    origins = with_container(work)
    if origins is None:
        console.print(f"no CDS client {issuer}")
        raise typer.Exit(1)
    console.print(f"CDS client {issuer}: launch origins {', '.join(origins) or 'none'}")


def _launch_origins(c: Container, given: list[str] | None) -> tuple[str, ...]:
    """The origins as stored (normalised), or ClientRegistrationError (exit 2)."""
    return clients.check_launch_origins(given or (), c.settings.cds_allow_http_loopback)


@app.command("list")
def list_() -> None:
    """The registered EHRs."""

    async def work(c: Container) -> list[ClientRow]:
        async with c.sessions() as s:
            return await clients.list_clients(SqlCdsClients(s))

    rows = with_container(work)
    table = Table(
        "issuer", "hospital", "keys", "FHIR servers", "launch origins", "added", "revoked"
    )
    for r in rows:
        keys = r.jwks_url or f"{r.keys} inline key(s)"
        revoked = r.revoked_at.date().isoformat() if r.revoked_at else ""
        servers = "\n".join(r.fhir_servers) or "-"
        origins = "\n".join(r.launch_origins) or "-"
        added = r.added_at.date().isoformat()
        table.add_row(r.issuer, r.hospital, keys, servers, origins, added, revoked)
    console.print(table)


@app.command("revoke")
def revoke(
    issuer: Annotated[str, typer.Option(help="The EHR's JWT issuer.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Stop accepting an EHR's calls (its JWTs are refused from now on)."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> bool:
        async with c.sessions() as s, s.begin():
            revoked = await clients.revoke_client(SqlCdsClients(s), issuer)
            if revoked:
                detail = {"issuer": issuer}
                await record_change(
                    s, actor, action="cds.client.revoke", hospital=None, detail=detail
                )
            return revoked

    if not with_container(work):
        console.print(f"no active CDS client {issuer}")
        raise typer.Exit(1)
    console.print(f"CDS client {issuer} revoked")
