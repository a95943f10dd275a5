"""`mrb dlq list|replay`: what was rejected and why; re-submit after a fix."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer, ConsumerRecord
from rich.console import Console
from rich.table import Table

from broker.cli.adapter_cmd import bootstrap_of
from broker.ingest.followups import DLQ_ALGORITHM_HEADER, open_dlq_value
from broker.kafka.reading import read_topic
from broker.kafka.topics import RESULTS, RESULTS_DLQ
from broker.security.payload_cipher import PayloadCipher
from broker.settings import Settings

app = typer.Typer(help="The dead-letter queue mrb.results.dlq.v1.", no_args_is_help=True)
console = Console(soft_wrap=True)


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    for k, v in record.headers:
        if k == name:
            return str(v.decode("utf-8", "replace"))
    return ""


@app.command("list")
def dlq_list(
    code: Annotated[str | None, typer.Option(help="Only this error code.")] = None,
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
) -> None:
    """List rejected messages: hospital, message id, error code and detail (never the value)."""
    records = _filtered(code, hospital)
    table = Table("hospital", "message id", "code", "detail")
    for r in records:
        table.add_row(
            _header(r, "mrb-hospital"),
            _header(r, "mrb-message-id"),
            _header(r, "mrb-error-code"),
            _header(r, "mrb-error-detail")[:120],
        )
    console.print(table)
    counts = Counter(_header(r, "mrb-error-code") for r in records)
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "DLQ is empty")


@app.command("replay")
def dlq_replay(
    code: Annotated[str | None, typer.Option(help="Only this error code.")] = None,
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
) -> None:
    """Re-submit rejected messages to mrb.results.v1: original value and headers.

    DLQ values are sealed with the broker's payload key, so replay runs where the
    broker's MRB_DATA_DIR/keys are.
    """
    records = _filtered(code, hospital)
    settings = Settings()
    cipher = PayloadCipher.from_dir(settings.keys_dir, create=False)

    async def send() -> None:
        producer = AIOKafkaProducer(
            **settings.kafka_options(),
            bootstrap_servers=bootstrap_of(settings),
            acks="all",
            enable_idempotence=False,
            max_request_size=32 * 1024 * 1024,
        )
        await producer.start()
        try:
            for r in records:
                value = open_dlq_value(r.value or b"", dict(r.headers), cipher)
                headers = [
                    (k, v)
                    for k, v in r.headers
                    if not k.startswith(("mrb-error-", "mrb-origin", DLQ_ALGORITHM_HEADER))
                ]
                await producer.send_and_wait(RESULTS, value=value, key=r.key, headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())
    console.print(f"replayed {len(records)} message(s) to {RESULTS}")


def _filtered(code: str | None, hospital: str | None) -> list[ConsumerRecord[bytes, bytes]]:
    settings = Settings()
    records = asyncio.run(read_topic(bootstrap_of(settings), RESULTS_DLQ, settings.kafka_options()))
    return [
        r
        for r in records
        if (code is None or _header(r, "mrb-error-code") == code)
        and (hospital is None or _header(r, "mrb-hospital") == hospital)
    ]
