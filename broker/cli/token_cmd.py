"""`mrb token issue|list|revoke`: API bearer tokens, one holder, role and hospital each.

Issuing needs the token issuer's private key (keys/token-issuer.key), so it runs on the
issuing host only; listing and revoking need the database alone.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from broker.cli.context import BY_HELP, Register, operator, with_register
from broker.domain.actors import Role

if TYPE_CHECKING:
    from broker.security.tokens import IssuedToken
    from broker.storage.tokens import TokenRecord

app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

_ROLES = ", ".join(r.value for r in Role)


def _ttl(value: str | None) -> timedelta | None:
    if value is None:
        return None
    from broker.security.tokens import parse_ttl

    try:
        return parse_ttl(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("issue")
def issue(
    role: Annotated[Role, typer.Option(help=f"One of: {_ROLES}.")],
    subject: Annotated[
        str,
        typer.Option(help="The person (staff number, name) or system that holds it; audited."),
    ],
    hospital: Annotated[
        str | None,
        typer.Option(help="The hospital a hospital role acts for; platform roles act for all."),
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            help="Lifetime, e.g. 30m, 8h, 7d; default and maximum: MRB_TOKEN_MAX_TTL_PEOPLE "
            "(8 h) or, for --machine, MRB_TOKEN_MAX_TTL_MACHINES (30 d)."
        ),
    ] = None,
    machine: Annotated[
        bool,
        typer.Option(
            help="A system holds it (adapter tokens always; finance, platform-finance, audit)."
        ),
    ] = False,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Print a token for `Authorization: Bearer …` (nothing else on stdout, for scripts)."""
    from broker.security.tokens import describe
    from broker.services import tokens as token_service

    life = _ttl(ttl)
    issuer = operator(Role.SECURITY_ADMIN, by)

    async def work(register: Register) -> IssuedToken:
        return await token_service.issue(
            register.access_uow(),
            register.token_issuer(),
            issuer,
            subject=subject,
            role=role,
            hospital=hospital,
            ttl=life,
            machine=machine,
        )

    issued = with_register(work)
    err.print(
        f"token {issued.jti} for {issued.subject} ({issued.role.value}, {issued.hospital}, "
        f"{issued.kind.value}), valid {describe(issued.expires_at - issued.issued_at)} until "
        f"{issued.expires_at:%Y-%m-%d %H:%M} UTC; revoke with `mrb token revoke {issued.jti}`:"
    )
    console.print(issued.token)


@app.command("list")
def list_(
    hospital: Annotated[
        str | None, typer.Option(help="Only this hospital ('*': platform).")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Only this holder.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Include expired and revoked tokens.")
    ] = False,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Issued tokens, newest first: id, holder, role, hospital, lifetime, revocation."""
    from rich.table import Column, Table

    from broker.services import tokens as token_service

    actor = operator(Role.SECURITY_ADMIN, by)

    async def work(register: Register) -> list[TokenRecord]:
        return await token_service.listed(
            register.access_uow(), actor, hospital=hospital, subject=subject, live_only=not all_
        )

    # The id is what `mrb token revoke` takes: never cut, however narrow the terminal.
    jti = Column("jti", no_wrap=True, min_width=36)
    table = Table(jti, "subject", "role", "hospital", "kind", "issued", "expires", "revoked")
    for t in with_register(work):
        revoked = (
            f"{t.revoked_at:%Y-%m-%d %H:%M} by {t.revoked_by}: {t.reason}" if t.revoked_at else "-"
        )
        table.add_row(
            t.jti,
            t.subject,
            t.role,
            t.hospital,
            t.kind,
            f"{t.issued_at:%Y-%m-%d %H:%M} by {t.issued_by}",
            f"{t.expires_at:%Y-%m-%d %H:%M}",
            revoked,
        )
    console.print(table)


@app.command("revoke")
def revoke(
    jti: Annotated[
        str | None, typer.Argument(help="The token's id (see `mrb token list`).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Instead: every live token of this holder.")
    ] = None,
    hospital: Annotated[str | None, typer.Option(help="With --subject: only here.")] = None,
    *,
    reason: Annotated[str, typer.Option(help="Why (recorded), e.g. 'left the hospital'.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Revoke a token, or all of a holder's: every API process refuses them within
    MRB_TOKEN_REVOCATION_CACHE_SECONDS, without a restart."""
    from broker.services import tokens as token_service

    actor = operator(Role.SECURITY_ADMIN, by)

    async def work(register: Register) -> list[str]:
        return await token_service.revoke(
            register.access_uow(),
            actor,
            reason=reason,
            jti=jti,
            subject=subject,
            hospital=hospital,
        )

    revoked = with_register(work)
    if not revoked:
        console.print("nothing to revoke: no such live token (already revoked or expired?)")
        return
    for j in revoked:
        console.print(f"revoked {j}")
