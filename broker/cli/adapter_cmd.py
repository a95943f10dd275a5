"""`mrb adapter fhir`: publish FHIR files to mrb.results.v1 and report their receipts."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from adapters.common.envelope import OutgoingMessage, routing_key
from adapters.common.publisher import Publisher, Receipt, ReceiptWatcher
from adapters.common.signing import SigningKeyMissing, current_key
from adapters.fhir.source import patient_hint, read_items
from broker.security.keys import load_or_create_key
from broker.settings import Settings

app = typer.Typer(help="Hospital-side adapters.", no_args_is_help=True)
console = Console(soft_wrap=True)


def bootstrap_of(settings: Settings) -> str:
    """MRB_KAFKA_BOOTSTRAP, else the embedded broker that `mrb up`/`mrb demo` runs."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_kafka_port}"


@app.command("fhir")
def fhir(
    paths: Annotated[list[Path], typer.Argument(help="JSON/NDJSON files or directories.")],
    hospital: Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")],
    wait: Annotated[bool, typer.Option(help="Wait for each message's receipt.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for receipts.")] = 60.0,
) -> None:
    """Publish FHIR R4 files (JSON, NDJSON, Bundles, directories) as hospital HOSPITAL."""
    settings = Settings()
    secret = load_or_create_key(settings.keys_dir / "adapter-routing.key")
    try:
        items = list(read_items(paths))
    except (FileNotFoundError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not items:
        console.print("[yellow]no .json or .ndjson files found[/yellow]")
        raise typer.Exit(1)
    try:
        key_id, private_key = current_key(settings.keys_dir, hospital)
    except SigningKeyMissing as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    messages = [
        OutgoingMessage(
            hospital, i.value, routing_key(secret, hospital, patient_hint(i.value))
        ).signed(key_id, private_key)
        for i in items
    ]
    origin = {m.message_id: i.origin for m, i in zip(messages, items, strict=True)}
    try:
        receipts = asyncio.run(_publish(bootstrap_of(settings), messages, wait, timeout))
    except Exception as exc:
        console.print(
            f"[red]error:[/red] could not publish to Kafka at {bootstrap_of(settings)}: {exc}. "
            "Is `mrb up` running, or MRB_KAFKA_BOOTSTRAP set?"
        )
        raise typer.Exit(1) from None
    console.print(f"published {len(messages)} message(s) as {hospital}")
    if not wait:
        return
    _report(receipts, origin)
    missing = len(messages) - len(receipts)
    rejected = sum(1 for r in receipts.values() if r.outcome == "rejected")
    if missing:
        console.print(f"[yellow]{missing} message(s) without a receipt after {timeout}s[/yellow]")
    if missing or rejected:
        raise typer.Exit(1)


async def _publish(
    bootstrap: str, messages: list[OutgoingMessage], wait: bool, timeout: float
) -> dict[str, Receipt]:
    if not wait:
        async with Publisher(bootstrap) as pub:
            await pub.publish(messages)
        return {}
    async with ReceiptWatcher(bootstrap) as watcher, Publisher(bootstrap) as pub:
        await pub.publish(messages)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("waiting for receipts", total=len(messages))
            return await watcher.wait_for(
                {m.message_id for m in messages},
                timeout=timeout,
                progress=lambda n: progress.update(task, completed=n),
            )


def _report(receipts: dict[str, Receipt], origin: dict[str, str]) -> None:
    counts = Counter(r.outcome for r in receipts.values())
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no receipts")
    for mid, r in sorted(receipts.items(), key=lambda kv: origin[kv[0]]):
        if r.outcome == "rejected":
            console.print(f"  [red]{r.error_code}[/red] {origin[mid]}: {r.error_detail}")
