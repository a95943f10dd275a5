"""`mrb adapter fhir|status`: publish FHIR files through the outbox; see what happened."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.common.delivery import DeliveryReport, deliver
from adapters.common.envelope import OutgoingMessage, routing_key
from adapters.common.outbox import DELIVERED, PENDING, REJECTED, Outbox
from adapters.common.signing import SigningKeyMissing, current_key
from adapters.fhir.source import patient_hint, read_items
from broker.security.keys import load_or_create_key
from broker.settings import Settings

app = typer.Typer(help="Hospital-side adapters.", no_args_is_help=True)
console = Console(soft_wrap=True)


def bootstrap_of(settings: Settings) -> str:
    """MRB_KAFKA_BOOTSTRAP, else the embedded broker that `mrb up`/`mrb demo` runs."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_kafka_port}"


def open_outbox(settings: Settings) -> Outbox:
    """The adapter's outbox in MRB_DATA_DIR (sealed with an adapter-local key)."""
    key = load_or_create_key(settings.keys_dir / "outbox.key")
    return Outbox(settings.data_dir / "adapter-outbox.db", key)


@app.command("fhir")
def fhir(
    hospital: Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="JSON/NDJSON files or directories.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for receipts.")] = 60.0,
    resend_after: Annotated[
        float, typer.Option(help="Seconds without a receipt before sending again.")
    ] = 30.0,
) -> None:
    """Publish FHIR R4 files as HOSPITAL: stored in the outbox, signed, sent, receipted.

    Without PATHS, delivers what is still pending from earlier runs. Exit code 1 if a
    message was rejected or is still pending when the timeout ends (it stays in the
    outbox and is sent again next time).
    """
    settings = Settings()
    try:
        items = list(read_items(paths or []))
        key_id, private_key = current_key(settings.keys_dir, hospital)
    except (FileNotFoundError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except SigningKeyMissing as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if paths and not items:
        console.print("[yellow]no .json or .ndjson files found[/yellow]")
        raise typer.Exit(1)
    secret = load_or_create_key(settings.keys_dir / "adapter-routing.key")
    outbox = open_outbox(settings)
    try:
        queued = outbox.add(
            (
                OutgoingMessage(
                    hospital, i.value, routing_key(secret, hospital, patient_hint(i.value))
                ).signed(key_id, private_key),
                i.origin,
            )
            for i in items
        )
        report = asyncio.run(_deliver(outbox, settings, hospital, timeout, resend_after))
        _report(outbox, report, queued, hospital)
    except Exception as exc:
        console.print(
            f"[red]error:[/red] {exc}. Messages stay in the outbox; run again when Kafka at "
            f"{bootstrap_of(settings)} is reachable."
        )
        raise typer.Exit(1) from None
    finally:
        outbox.close()
    if report.pending or any(r.outcome == "rejected" for r in report.receipts.values()):
        raise typer.Exit(1)


async def _deliver(
    outbox: Outbox, settings: Settings, hospital: str, timeout: float, resend_after: float
) -> DeliveryReport:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("delivering", total=None)
        return await deliver(
            outbox,
            bootstrap_of(settings),
            hospital=hospital,
            options=settings.kafka_options(),
            resend_after=timedelta(seconds=resend_after),
            timeout=timeout,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _report(outbox: Outbox, report: DeliveryReport, queued: int, hospital: str) -> None:
    console.print(
        f"queued {queued} message(s) as {hospital}; sent {report.sent}, resent {report.resent}"
    )
    counts = Counter(r.outcome for r in report.receipts.values())
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no receipts")
    rejected = {s.message_id: s for s in outbox.listing(REJECTED, hospital, limit=10_000)}
    for mid in report.receipts:
        if mid in rejected:
            s = rejected[mid]
            console.print(f"  [red]{s.error_code}[/red] {s.origin}: {s.error_detail}")
    if report.pending:
        console.print(
            f"[yellow]{len(report.pending)} message(s) still pending[/yellow]: kept in the "
            "outbox and sent again on the next run"
        )


@app.command("status")
def status(
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per list.")] = 20,
) -> None:
    """Pending, delivered and rejected messages in this adapter's outbox, with reasons."""
    settings = Settings()
    outbox = open_outbox(settings)
    try:
        counts = outbox.counts(hospital)
        console.print(
            f"pending: {counts[PENDING]}, delivered: {counts[DELIVERED]}, "
            f"rejected: {counts[REJECTED]}"
        )
        for state in (PENDING, REJECTED):
            rows = outbox.listing(state, hospital, limit)
            if not rows:
                continue
            table = Table(
                "hospital", "message id", "from", "attempts", "code", "reason", title=state
            )
            for s in rows:
                table.add_row(
                    s.hospital,
                    s.message_id,
                    s.origin,
                    str(s.attempts),
                    s.error_code or "",
                    s.error_detail or "",
                )
            console.print(table)
    finally:
        outbox.close()
