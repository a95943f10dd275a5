"""`mrb user map|list|disable`: people who log in through OpenID Connect, and what mrb
lets each of them do (a role and a hospital per issuer + subject); `mrb user add|reset`
(and `disable --username`): local accounts that sign in to the web pages with a password
(argon2id-hashed; the embedded set-up, or where no issuer is run)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.domain.sessions import MIN_PASSWORD_LENGTH, check_password
from broker.ports.web import WebAccount
from broker.security.passwords import generate_password
from broker.services import users as user_service
from broker.settings import Settings
from broker.storage.oidc_users import OidcUser

app = typer.Typer(
    help="People who log in: local accounts (add, reset, disable --username) and those of "
    "the OpenID Connect issuer, MRB_OIDC_ISSUER (map, disable --subject).",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

_ROLES = ", ".join(r.value for r in Role if r is not Role.ADAPTER)
_ISSUER_HELP = "The issuer, exactly as its tokens' `iss` says; default: MRB_OIDC_ISSUER."
_GENERATE_HELP = "Generate a random password and print it once, instead of prompting."

# The options `add` and `map` share (granting a person a role), and those of every command.
RoleOpt = Annotated[Role, typer.Option(help=f"One of: {_ROLES}.")]
HospitalOpt = Annotated[
    str | None,
    typer.Option(help="The hospital a hospital role acts for; platform roles act for all."),
]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="A display name, for `mrb user list` and the pages.")
]
IssuerOpt = Annotated[str | None, typer.Option(help=_ISSUER_HELP)]
GenerateOpt = Annotated[bool, typer.Option("--generate", help=_GENERATE_HELP)]
ByOpt = Annotated[str | None, typer.Option(help=BY_HELP)]


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
    role: RoleOpt,
    hospital: HospitalOpt = None,
    issuer: IssuerOpt = None,
    name: NameOpt = None,
    by: ByOpt = None,
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
    by: ByOpt = None,
) -> None:
    """Mapped people (issuer, subject, name, role, hospital, who mapped them, disabled),
    then local accounts (unless --issuer is given)."""
    actor = operator(Role.SECURITY_ADMIN, by)

    async def work(container: Container) -> tuple[list[OidcUser], list[WebAccount]]:
        mapped = await user_service.listed(
            container.access_uow(), actor, issuer=issuer, hospital=hospital, enabled_only=enabled
        )
        local = (
            []
            if issuer is not None
            else await user_service.listed_accounts(container.web_uow(), actor, hospital=hospital)
        )
        return mapped, [a for a in local if not (enabled and a.disabled_at)]

    mapped, local = with_container(work)
    table = Table("issuer", "subject", "name", "role", "hospital", "mapped", "disabled")
    for u in mapped:
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
    if local:
        accounts = Table(
            "local account", "name", "role", "hospital", "added", "locked until", "disabled"
        )
        for a in local:
            accounts.add_row(
                a.username,
                a.display_name or "-",
                a.role,
                a.hospital,
                f"{a.created_at:%Y-%m-%d %H:%M} by {a.created_by}",
                f"{a.locked_until:%Y-%m-%d %H:%M}" if a.locked_until else "-",
                f"{a.disabled_at:%Y-%m-%d %H:%M}" if a.disabled_at else "-",
            )
        console.print(accounts)


@app.command("disable")
def disable(
    reason: Annotated[str, typer.Option(help="Why (recorded), e.g. 'left the hospital'.")],
    subject: Annotated[
        str | None, typer.Option(help="An OpenID Connect person: their `sub` at the issuer.")
    ] = None,
    username: Annotated[str | None, typer.Option(help="A local account's username.")] = None,
    issuer: IssuerOpt = None,
    by: ByOpt = None,
) -> None:
    """Disable a person, named by --subject (OpenID Connect) or --username (a local
    account): their next request is refused, in every API process, without a restart, and
    a local account's web sessions end at once (`mrb user map` / `mrb user reset --enable`
    enable them again)."""
    if (subject is None) == (username is None):
        raise typer.BadParameter("give --subject (OpenID Connect) or --username (local), one")
    actor = operator(Role.SECURITY_ADMIN, by)
    if username is not None:
        name = username

        async def local(container: Container) -> bool:
            return await user_service.disable_account(
                container.web_uow(), actor, username=name, reason=reason
            )

        if with_container(local):
            console.print(f"disabled the local account {name}; its sessions ended")
        else:
            console.print(f"the local account {name} was disabled already")
        return
    assert subject is not None
    iss = _issuer(issuer)

    async def work(container: Container) -> bool:
        return await user_service.disable(
            container.access_uow(), actor, issuer=iss, subject=subject, reason=reason
        )

    if with_container(work):
        console.print(f"disabled {subject} of {iss}")
    else:
        console.print(f"{subject} of {iss} was disabled already")


def _new_password(username: str, generate: bool) -> tuple[str, bool]:
    """A password typed twice (hidden), or generated; True when generated (print it)."""
    if generate:
        return generate_password(), True
    password: str = typer.prompt(
        f"new password for {username} (at least {MIN_PASSWORD_LENGTH} characters)",
        hide_input=True,
        confirmation_prompt=True,
    )
    check_password(username, password)  # fail before touching the database
    return password, False


@app.command("add")
def add(
    username: Annotated[
        str, typer.Option(help="2-64 of a-z 0-9 . _ @ - (stored lower-case); audited.")
    ],
    role: RoleOpt,
    hospital: HospitalOpt = None,
    name: NameOpt = None,
    generate: GenerateOpt = False,
    by: ByOpt = None,
) -> None:
    """A local account for the web pages (/login), with one role (and hospital) exactly
    as an API token's. The password is hashed with argon2id; it is never stored or shown
    again."""
    actor = operator(Role.SECURITY_ADMIN, by)
    password, generated = _new_password(username, generate)

    async def work(container: Container) -> WebAccount:
        return await user_service.add_account(
            container.web_uow(),
            actor,
            username=username,
            password=password,
            role=role,
            hospital=hospital,
            display_name=name,
        )

    account = with_container(work)
    console.print(f"added {account.username}: {account.role}, {account.hospital}")
    if generated:
        console.print(f"password (shown once): {password}", highlight=False)


@app.command("reset")
def reset(
    username: Annotated[str, typer.Option(help="The local account's username.")],
    enable: Annotated[
        bool, typer.Option("--enable", help="Also enable the account if disabled.")
    ] = False,
    generate: GenerateOpt = False,
    by: ByOpt = None,
) -> None:
    """Set a new password for a local account: clears its failed logins and lock and ends
    its sessions."""
    actor = operator(Role.SECURITY_ADMIN, by)
    password, generated = _new_password(username, generate)

    async def work(container: Container) -> WebAccount:
        return await user_service.reset_password(
            container.web_uow(), actor, username=username, password=password, enable=enable
        )

    account = with_container(work)
    state = "disabled" if account.disabled_at else "enabled"
    console.print(f"new password set for {account.username} ({state}); its sessions ended")
    if generated:
        console.print(f"password (shown once): {password}", highlight=False)
