"""Publishing envelopes to Kafka and waiting for their (signed) receipts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.common.envelope import RECEIPTS_TOPIC, RESULTS_TOPIC, OutgoingMessage
from adapters.common.receipts import Receipt, ReceiptRefused, ReceiptTrust, Refusal

__all__ = ["MAX_REQUEST_BYTES", "Publisher", "Receipt", "ReceiptWatcher", "Refusal"]

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024


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
    """Reads mrb.receipts.v1 from its current end, or from `start` (partition -> next
    offset, as an outbox saved it) to catch receipts sent while no one watched: a DLQ
    replay's. Start it before publishing.

    Only receipts the broker signed for the right hospital with a key in `trust` are
    returned; any other receipt for a wanted message is refused: logged, handed to
    `on_refused` and kept in `refused` (the message stays pending).
    """

    def __init__(
        self,
        bootstrap: str,
        options: Mapping[str, Any] | None = None,
        *,
        trust: ReceiptTrust,
        on_refused: Callable[[Refusal], None] | None = None,
        start: Mapping[int, int] | None = None,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            **dict(options or {}),
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",  # a saved offset Kafka no longer holds
        )
        self._start = dict(start or {})
        self._tps: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] = {}
        self._trust = trust
        self._on_refused = on_refused
        self.receipts: dict[str, Receipt] = {}
        self.refused: list[Refusal] = []

    async def __aenter__(self) -> ReceiptWatcher:
        await self._consumer.start()
        try:
            return await self._position()
        except BaseException:  # cancelled (Ctrl-C) or failed: never leave a client open
            await self._consumer.stop()
            raise

    async def _position(self) -> ReceiptWatcher:
        partitions = self._consumer.partitions_for_topic(RECEIPTS_TOPIC) or set()
        if not partitions:
            raise RuntimeError(f"topic {RECEIPTS_TOPIC} does not exist: is the broker set up?")
        tps = [TopicPartition(RECEIPTS_TOPIC, p) for p in sorted(partitions)]
        self._tps = tps
        self._consumer.assign(tps)
        self._ends = dict(await self._consumer.end_offsets(tps))
        for tp in tps:
            saved = self._start.get(tp.partition)
            if not self._start:
                await self._consumer.seek_to_end(tp)
            elif saved is None or saved > self._ends[tp]:  # new, or the topic was recreated
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, saved)
        for tp in tps:  # resolve the positions now, before anything is published
            await self._consumer.position(tp)
        return self

    async def positions(self) -> dict[int, int]:
        """Per partition, the next offset to read: what an outbox saves for next time."""
        return {tp.partition: await self._consumer.position(tp) for tp in self._tps}

    async def caught_up(self) -> bool:
        """Read up to where the topic ended when this watcher started."""
        for tp in self._tps:
            if await self._consumer.position(tp) < self._ends.get(tp, 0):
                return False
        return True

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, wanted: Mapping[str, str], *, timeout_ms: int = 200) -> list[Receipt]:
        """Verified receipts that arrived since the last poll for the `wanted` messages
        (message id -> the hospital that sent it)."""
        found: list[Receipt] = []
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for batch in fetched.values():
            for record in batch:
                message_id = _message_id(record.value)
                if message_id is None or message_id not in wanted:
                    continue  # another adapter's, or not a receipt at all: not ours to judge
                hospital = wanted[message_id]
                try:
                    r = self._trust.verify(record.value, record.headers, hospital)
                except ReceiptRefused as no:
                    self._refuse(Refusal(message_id, hospital, no.reason, no.detail, no.key_id))
                    continue
                self.receipts[r.message_id] = r
                found.append(r)
        return found

    def _refuse(self, refusal: Refusal) -> None:
        logger.warning(
            "receipt refused for message %s of %s (%s): %s; the message stays in the outbox",
            refusal.message_id,
            refusal.hospital,
            refusal.reason,
            refusal.detail,
        )
        self.refused.append(refusal)
        if self._on_refused is not None:
            self._on_refused(refusal)

    async def wait_for(
        self, message_ids: Mapping[str, str], *, timeout: float, progress: Any = None
    ) -> dict[str, Receipt]:
        """Collect verified receipts until every id has one or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not message_ids.keys() <= self.receipts.keys() and time.monotonic() < deadline:
            await self.poll(message_ids)
            if progress is not None:
                progress(len(message_ids.keys() & self.receipts.keys()))
        return {m: self.receipts[m] for m in message_ids if m in self.receipts}


def _message_id(value: bytes | None) -> str | None:
    """The message id a record claims to answer (unverified: only to pick ours)."""
    if not value:
        return None
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    mid = doc.get("message_id") if isinstance(doc, dict) else None
    return mid if isinstance(mid, str) else None
