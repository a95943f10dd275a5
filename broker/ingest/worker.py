"""The ingest worker: a Kafka consumer group member that indexes results in batches.

At least once, without loss: offsets are committed only after the database commit and
after DLQ copies and receipts are acknowledged; a database outage rewinds the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import InterfaceError, OperationalError

from broker.domain.rejections import RejectCode
from broker.ingest.followups import publish_followups
from broker.ingest.service import InboundMessage, IngestService, Outcome, Processed
from broker.kafka.topics import RESULTS
from broker.observability import (
    BATCH_SECONDS,
    CONSUMER_LAG,
    END_TO_END_SECONDS,
    MESSAGES,
    REJECTED,
    RESULTS_INGESTED,
)
from broker.security.payload_cipher import PayloadCipher
from broker.security.receipt_signing import ReceiptSigner

logger = logging.getLogger(__name__)

FETCH_BYTES = 32 * 1024 * 1024  # oversized messages must still be fetched to reach the DLQ


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    indexed: int = 0
    duplicates: int = 0
    rejected: int = 0
    kafka_ok: bool = False
    last_error: str | None = None


class IngestWorker:
    """Consumes mrb.results.v1 until `stop` is set."""

    def __init__(
        self,
        service: IngestService,
        *,
        cipher: PayloadCipher,
        receipt_signer: ReceiptSigner,
        bootstrap: str,
        group_id: str,
        max_records: int = 500,
        retry_seconds: float = 2.0,
        session_timeout_ms: int = 10_000,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._service = service
        self._cipher = cipher  # seals DLQ copies
        self._receipt_signer = receipt_signer  # signs receipts (the adapters verify them)
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._max_records = max_records
        self._retry_seconds = retry_seconds
        self._session_timeout_ms = session_timeout_ms
        self._kafka_options = dict(kafka_options or {})
        self.stats = WorkerStats()
        self._lag_partitions: set[TopicPartition] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`; if Kafka is unreachable, keep retrying (never give up).

        Kafka being down must not take the process down: with `mrb up` the API in the
        same process keeps answering checks from the database meanwhile.
        """
        wait = 1.0
        while not stop.is_set():
            try:
                await self._session(stop)
                return
            except (KafkaError, OSError) as exc:
                self.stats.last_error = f"Kafka unavailable: {exc!r}"
                logger.warning("Kafka unavailable (%r); retrying in %.0fs", exc, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                wait = min(wait * 2, 30.0)

    async def _session(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            RESULTS,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_bytes=FETCH_BYTES,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(100, self._session_timeout_ms // 4),
            **self._kafka_options,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=False,  # Tansu has no idempotent producer
            max_request_size=FETCH_BYTES,
            linger_ms=5,
            **self._kafka_options,
        )
        try:
            await producer.start()
            await consumer.start()
            self.stats.kafka_ok = True
            self.stats.last_error = None
            while not stop.is_set():
                await self._poll_once(consumer, producer)
        finally:
            self.stats.kafka_ok = False
            await consumer.stop()
            await producer.stop()

    async def _poll_once(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        fetched = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
        records = [r for batch in fetched.values() for r in batch]
        if not records:
            await self._update_lag(consumer)  # lag can grow while nothing reaches us
            return
        started = time.perf_counter()
        try:
            processed = await self._service.process_batch([_inbound(r) for r in records])
            await publish_followups(producer, processed, self._cipher, self._receipt_signer)
        except (OperationalError, InterfaceError) as exc:
            self.stats.last_error = f"database unavailable: {type(exc).__name__}"
            logger.warning("database unavailable; retrying batch in %ss", self._retry_seconds)
            for tp, batch in fetched.items():
                consumer.seek(tp, batch[0].offset)
            await asyncio.sleep(self._retry_seconds)
            return
        try:
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items()})
        except KafkaError as exc:
            # A rebalance or a broker restart: the batch may come again, and the inbox
            # answers it with `duplicate` receipts. Indexed is indexed either way.
            logger.warning("offset commit failed (%r); the batch may be redelivered", exc)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        _observe_end_to_end(records)
        self._count(processed)
        self.stats.last_error = None
        await self._update_lag(consumer)

    def _count(self, processed: list[Processed]) -> None:
        self.stats.batches += 1
        for p in processed:
            self.stats.messages += 1
            MESSAGES.labels(p.hospital or "-", p.outcome.value).inc()
            if p.outcome is Outcome.REJECTED:
                self.stats.rejected += 1
                REJECTED.labels(p.code.value if p.code else "-").inc()
            elif p.outcome is Outcome.DUPLICATE:
                self.stats.duplicates += 1
            else:
                self.stats.indexed += 1
            for placement, n in p.versions.items():
                RESULTS_INGESTED.labels(p.hospital or "-", placement).inc(n)
            log_outcome(p)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        for tp in self._lag_partitions - assigned:  # moved to another worker: not ours
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        self._lag_partitions = set(assigned)
        for tp in assigned:
            high = consumer.highwater(tp)
            if high is not None:
                position = await consumer.position(tp)
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - position))


def log_outcome(p: Processed) -> None:
    """One line per message after its batch committed: the correlation id the adapter
    logged when it stored and sent it, where it was read, and what became of it.

    Only header values that passed the broker's checks are logged: a rejected message's
    id or hospital header may hold anything a sender put there.
    """
    m = p.message
    trusted = p.outcome is not Outcome.REJECTED or p.code not in _UNTRUSTED_HEADERS
    logger.info(
        "message %s",
        p.outcome.value,
        extra={
            "message_id": p.message_id if trusted and _is_uuid(p.message_id) else None,
            "hospital": p.hospital if trusted else None,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "outcome": p.outcome.value,
            "error_code": p.code.value if p.code else None,
            "results": p.results,
        },
    )


# Rejections that mean the id or hospital header was not what mrb accepts.
_UNTRUSTED_HEADERS = frozenset(
    {RejectCode.MISSING_HEADER, RejectCode.INVALID_MESSAGE_ID, RejectCode.UNKNOWN_HOSPITAL}
)


def _is_uuid(value: str | None) -> bool:
    try:
        return value is not None and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _observe_end_to_end(records: list[ConsumerRecord[bytes, bytes]]) -> None:
    """Seconds from the record's Kafka timestamp (set by the adapter's producer when it
    sent, or by the broker on append) to now, when its batch is indexed and committed."""
    now_ms = time.time() * 1000
    for r in records:
        if r.timestamp is not None and r.timestamp > 0:
            END_TO_END_SECONDS.observe(max(0.0, now_ms - r.timestamp) / 1000)


def _inbound(record: ConsumerRecord[bytes, bytes]) -> InboundMessage:
    headers = dict(record.headers)
    return InboundMessage(
        value=record.value or b"",
        headers=headers,
        key=record.key,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
