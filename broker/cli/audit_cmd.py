"""`mrb audit seal|verify`: the audit trail's hash chain and its signed checkpoints."""

from __future__ import annotations

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.context import with_container
from broker.domain.audit_chain import ChainReport
from broker.storage.audit_chain import CheckpointKey, seal, verify

app = typer.Typer(help="The audit trail's hash chain.", no_args_is_help=True)
console = Console(soft_wrap=True)


def _key(c: Container) -> CheckpointKey:
    return CheckpointKey.from_dir(c.settings.keys_dir, create=c.settings.may_create_keys)


@app.command("seal")
def seal_cmd() -> None:
    """Link unsealed entries onto the chain now (workers do it every few seconds)."""

    async def work(c: Container) -> int:
        async with c.sessions() as s, s.begin():
            return await seal(s, _key(c))

    console.print(f"sealed {with_container(work)} entr(ies)")


@app.command("verify")
def verify_cmd() -> None:
    """Recompute the chain and check every checkpoint; exit 1 if anything was altered."""

    async def work(c: Container) -> tuple[ChainReport, str]:
        key = _key(c)
        async with c.sessions() as s:
            return await verify(s, key), key.public_b64

    report, public = with_container(work)
    console.print(
        f"{report.sealed} sealed entries, {report.unsealed} not yet sealed, "
        f"{report.checkpoints} signed checkpoints (Ed25519 public key {public})"
    )
    for problem in report.problems:
        console.print(f"  [red]{problem}[/red]")
    if not report.intact:
        raise typer.Exit(1)
    console.print("[green]the audit trail is intact[/green]")
