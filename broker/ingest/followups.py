"""After the database commit: DLQ copies of rejected messages and a receipt for each."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from broker.ingest.service import Outcome, Processed
from broker.kafka.topics import RECEIPTS, RESULTS_DLQ


def receipt(p: Processed) -> bytes:
    """A receipt carries the message id and outcome only: no patient data."""
    return json.dumps(
        {
            "message_id": p.message_id,
            "hospital": p.hospital,
            "outcome": p.outcome.value,
            "error_code": p.code.value if p.code else None,
            "error_detail": p.detail,
            "results": p.results,
            "processed_at": datetime.now(UTC).isoformat(),
        },
        ensure_ascii=False,
    ).encode()


def dlq_headers(p: Processed) -> list[tuple[str, bytes]]:
    headers = [(k, v) for k, v in p.message.headers.items() if not k.startswith("mrb-error-")]
    headers.append(("mrb-error-code", (p.code.value if p.code else "").encode()))
    headers.append(("mrb-error-detail", (p.detail or "").encode()))
    if p.message.topic is not None:
        origin = f"{p.message.topic}/{p.message.partition}/{p.message.offset}"
        headers.append(("mrb-origin", origin.encode()))
    return headers


async def publish_followups(producer: AIOKafkaProducer, processed: list[Processed]) -> None:
    """Send DLQ copies and receipts and wait for every acknowledgement."""
    futures = []
    for p in processed:
        if p.outcome is Outcome.REJECTED:
            futures.append(
                await producer.send(
                    RESULTS_DLQ, value=p.message.value, key=p.message.key, headers=dlq_headers(p)
                )
            )
        if p.message_id is not None or p.hospital is not None:
            futures.append(
                await producer.send(
                    RECEIPTS, value=receipt(p), key=(p.hospital or "").encode() or None
                )
            )
    for fut in futures:
        await fut
