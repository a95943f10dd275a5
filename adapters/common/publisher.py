"""Publishing envelopes to Kafka and waiting for their receipts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.common.envelope import RECEIPTS_TOPIC, RESULTS_TOPIC, OutgoingMessage

MAX_REQUEST_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Receipt:
    message_id: str
    outcome: str  # indexed | duplicate | rejected
    error_code: str | None
    error_detail: str | None
    results: int

    @classmethod
    def from_json(cls, raw: bytes) -> Receipt:
        d: dict[str, Any] = json.loads(raw)
        return cls(
            d["message_id"],
            d["outcome"],
            d.get("error_code"),
            d.get("error_detail"),
            int(d.get("results") or 0),
        )


class Publisher:
    """A Kafka producer for mrb.results.v1 (acks=all; Tansu has no idempotence)."""

    def __init__(self, bootstrap: str, options: Mapping[str, Any] | None = None) -> None:
        self._producer = AIOKafkaProducer(
            **dict(options or {}),
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=False,
            max_request_size=MAX_REQUEST_BYTES,
            linger_ms=10,
        )

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def publish(self, messages: Iterable[OutgoingMessage]) -> int:
        """Send all messages and wait until the broker acknowledged each one."""
        futures = [
            await self._producer.send(RESULTS_TOPIC, value=m.value, key=m.key, headers=m.headers())
            for m in messages
        ]
        for fut in futures:
            await fut
        return len(futures)


class ReceiptWatcher:
    """Reads mrb.receipts.v1 from its current end; start it before publishing."""

    def __init__(self, bootstrap: str, options: Mapping[str, Any] | None = None) -> None:
        self._consumer = AIOKafkaConsumer(
            **dict(options or {}),
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
        )
        self.receipts: dict[str, Receipt] = {}

    async def __aenter__(self) -> ReceiptWatcher:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(RECEIPTS_TOPIC) or set()
        if not partitions:
            await self._consumer.stop()
            raise RuntimeError(f"topic {RECEIPTS_TOPIC} does not exist: is the broker set up?")
        tps = [TopicPartition(RECEIPTS_TOPIC, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is published
            await self._consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, wanted: set[str], *, timeout_ms: int = 200) -> list[Receipt]:
        """Receipts that arrived since the last poll for any of the `wanted` message ids."""
        found: list[Receipt] = []
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for batch in fetched.values():
            for record in batch:
                if record.value is None:
                    continue
                r = Receipt.from_json(record.value)
                if r.message_id in wanted:
                    self.receipts[r.message_id] = r
                    found.append(r)
        return found

    async def wait_for(
        self, message_ids: set[str], *, timeout: float, progress: Any = None
    ) -> dict[str, Receipt]:
        """Collect receipts until every id has one or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not message_ids <= self.receipts.keys() and time.monotonic() < deadline:
            await self.poll(message_ids)
            if progress is not None:
                progress(len(message_ids & self.receipts.keys()))
        return {m: self.receipts[m] for m in message_ids if m in self.receipts}
