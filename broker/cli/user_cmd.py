"""`mrb user map|list|disable`: people who log in through OpenID Connect, and what mrb
lets each of them do (a role and a hospital per issuer + subject)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.services import users as user_service
from broker.settings import Settings
from broker.storage.oidc_users import OidcUser

app = typer.Typer(
    help="People who log in through the OpenID Connect issuer (MRB_OIDC_ISSUER).",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

_ROLES = ", ".join(r.value for r in Role if r is not Role.ADAPTER)
_ISSUER_HELP = "The issuer, exactly as its tokens' `iss` says; default: MRB_OIDC_ISSUER."


def _issuer(value: str | None) -> str:
    issuer = value or Settings().oidc_issuer
    if not issuer:
        raise typer.BadParameter("give --issuer (no MRB_OIDC_ISSUER is configured)")
    return issuer


@app.command("map")
def map_(
    subject: Annotated[
        str, typer.Option(help="The person's `sub` at the issuer, exactly; audited.")
    ],
    role: Annotated[Role, typer.Option(help=f"One of: {_ROLES}.")],
    hospital: Annotated[
        str | None,
        typer.Option(help="The hospital a hospital role acts for; platform roles act for all."),
    ] = None,
    issuer: Annotated[str | None, typer.Option(help=_ISSUER_HELP)] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="A display name, for `mrb user list`.")
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Let a person of the issuer act in mrb with one role (and hospital); mapping again
    replaces the role and hospital and enables a disabled person."""
    actor = operator(Role.SECURITY_ADMIN, by)
    iss = _issuer(issuer)

    async def work(container: Container) -> OidcUser:
        return await user_service.map_user(
            container.access_uow(),
            actor,
            issuer=iss,
            subject=subject,
            role=role,
            hospital=hospital,
            display_name=name,
        )

    user = with_container(work)
    console.print(f"mapped {user.subject} of {user.issuer}: {user.role}, {user.hospital}")


@app.command("list")
def list_(
    issuer: Annotated[str | None, typer.Option(help="Only this issuer.")] = None,
    hospital: Annotated[
        str | None, typer.Option(help="Only this hospital ('*': platform roles).")
    ] = None,
    enabled: Annotated[bool, typer.Option("--enabled", help="Leave out disabled people.")] = False,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Mapped people: issuer, subject, name, role, hospital, who mapped them, disabled."""
    actor = operator(Role.SECURITY_ADMIN, by)

    async def work(container: Container) -> list[OidcUser]:
        return await user_service.listed(
            container.access_uow(), actor, issuer=issuer, hospital=hospital, enabled_only=enabled
        )

    table = Table("issuer", "subject", "name", "role", "hospital", "mapped", "disabled")
    for u in with_container(work):
        table.add_row(
            u.issuer,
            u.subject,
            u.display_name or "-",
            u.role,
            u.hospital,
            f"{u.created_at:%Y-%m-%d %H:%M} by {u.created_by}",
            f"{u.disabled_at:%Y-%m-%d %H:%M}" if u.disabled_at else "-",
        )
    console.print(table)


@app.command("disable")
def disable(
    subject: Annotated[str, typer.Option(help="The person's `sub` at the issuer.")],
    reason: Annotated[str, typer.Option(help="Why (recorded), e.g. 'left the hospital'.")],
    issuer: Annotated[str | None, typer.Option(help=_ISSUER_HELP)] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Disable a person: their next request gets 403, in every API process, without a
    restart (`mrb user map` enables them again)."""
    actor = operator(Role.SECURITY_ADMIN, by)
    iss = _issuer(issuer)

    async def work(container: Container) -> bool:
        return await user_service.disable(
            container.access_uow(), actor, issuer=iss, subject=subject, reason=reason
        )

    if with_container(work):
        console.print(f"disabled {subject} of {iss}")
    else:
        console.print(f"{subject} of {iss} was disabled already")
