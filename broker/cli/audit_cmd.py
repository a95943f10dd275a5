"""`mrb audit key|seal|verify`: the audit trail's hash chain, signed and exported checkpoints.

`key` and `seal` run on the sealer host (the only one holding keys/audit-checkpoint.key);
`verify` runs anywhere with the pinned public key and a copy of the checkpoint export.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from broker.bootstrap import AuditTrail
from broker.cli.state import StateMissing, announce, require_state
from broker.domain.audit_chain import ChainReport
from broker.logging_setup import configure_logging
from broker.runtime import install_signal_handlers
from broker.services.audit_sealer import AuditSealer, ChainBehindExport
from broker.settings import Settings
from broker.storage.audit_chain import PRIVATE_KEY_FILE, CheckpointKey, verify
from broker.storage.database import DatabaseError

app = typer.Typer(help="The audit trail's hash chain.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _run(work: Callable[[AuditTrail], Awaitable[T]]) -> T:
    """Run `work` on the audit trail of the existing, up-to-date database (never created
    here); a configuration it cannot use exits 2 with the cause."""
    settings = Settings()
    configure_logging(settings.log_level, settings=settings)
    announce(settings)

    async def main() -> T:
        # Embedded (SQLite), the sealer's key lives in the data folder beside the others.
        await require_state(settings, keys=settings.may_create_keys)
        trail = AuditTrail.build(settings)
        try:
            return await work(trail)
        finally:
            await trail.close()

    try:
        return asyncio.run(main())
    except (ValueError, StateMissing) as exc:  # keys, pins, export locations, the database
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except ChainBehindExport as exc:  # evidence of tampering, as `verify` would find
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except OSError as exc:  # exit 1 means findings, never this
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except DatabaseError as exc:
        err.print(f"[red]error:[/red] the database: {type(exc).__name__}")
        raise typer.Exit(2) from None


@app.command("key")
def key_cmd() -> None:
    """On the sealer host: create the checkpoint signing key if missing; print its public key.

    The private key (MRB_AUDIT_SEALER_KEY, default keys/audit-checkpoint.key) stays on this
    host. Pin the printed public key everywhere else: MRB_AUDIT_CHECKPOINT_PUBLIC_KEY, or
    keys/audit-checkpoint.pub.
    """
    settings = Settings()
    path = settings.audit_sealer_key or settings.keys_dir / PRIVATE_KEY_FILE
    key = CheckpointKey.from_file(path, create=True)
    written = key.write_public(path.with_suffix(".pub"))
    console.print(f"checkpoint key {key.key_id} in {path}; public key written to {written}")
    console.print("pin it on the API, worker and auditor hosts:")
    console.print(f"  MRB_AUDIT_CHECKPOINT_PUBLIC_KEY={key.public_b64}")


def _sealer(trail: AuditTrail) -> AuditSealer:
    sealer = trail.sealer(sealer_host=True)
    if not sealer.active:
        s = trail.settings
        raise ValueError(
            f"this host holds no sealer key ({s.audit_sealer_key or s.keys_dir / PRIVATE_KEY_FILE})"
            ": seal on the sealer host, or create the key there with `mrb audit key`"
        )
    return sealer


@app.command("seal")
def seal_cmd(
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep sealing every MRB_AUDIT_SEAL_INTERVAL_SECONDS until Ctrl-C / SIGTERM.",
        ),
    ] = False,
) -> None:
    """Link unsealed entries onto the chain, sign a checkpoint and export it (sealer host)."""

    async def once(trail: AuditTrail) -> int:
        return await _sealer(trail).seal_once()

    async def forever(trail: AuditTrail) -> int:
        sealer = _sealer(trail)
        stop = asyncio.Event()
        install_signal_handlers(stop)
        err.print("sealing the audit trail (Ctrl-C to stop)")
        await sealer.run(stop)
        return sealer.sealed

    n = _run(forever if follow else once)
    console.print(f"sealed {n} entr(ies)")


@app.command("verify")
def verify_cmd(
    export: Annotated[
        str | None,
        typer.Option(help="The checkpoint export to compare with (default MRB_AUDIT_EXPORT)."),
    ] = None,
) -> None:
    """Recompute the chain, check checkpoints against the pinned key and the export.

    Exit 1 naming what was found: truncated, deleted, edited, re-signed, or an export
    that is missing or unreadable.
    """

    async def work(trail: AuditTrail) -> tuple[ChainReport, tuple[str, ...], str]:
        pinned = trail.pinned_keys()
        destination = trail.export(export)
        async with trail.sessions() as s:
            report = await verify(s, pinned, destination)
        return report, pinned.key_ids, destination.location if destination else "none"

    report, key_ids, location = _run(work)
    console.print(
        f"{report.sealed} sealed entries, {report.unsealed} not yet sealed, "
        f"{report.checkpoints} signed checkpoints, {report.exported} exported to "
        f"{escape(location)} (pinned key {', '.join(key_ids)})"
    )
    for note in report.notes:
        console.print(f"  [yellow]{escape(note)}[/yellow]")
    for problem in report.problems:
        console.print(f"  [red]{escape(problem)}[/red]")
    if not report.intact:
        console.print(f"[red]the audit trail was altered ({len(report.problems)} finding(s))[/red]")
        raise typer.Exit(1)
    console.print("[green]the audit trail is intact[/green]")
