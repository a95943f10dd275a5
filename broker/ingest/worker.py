"""The ingest worker: a Kafka consumer group member that indexes results in batches.

At least once, without loss: offsets are committed only after the database commit and
after DLQ copies and receipts are acknowledged. A database outage rewinds the batch and
pauses the assigned partitions: the consumer keeps polling (so it keeps its place in the
group however long the outage lasts), probes the database with a bounded backoff, and
resumes from the rewound offsets once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from broker.domain.errors import retriable
from broker.domain.rejections import RejectCode
from broker.ingest.after_commit import publish_followups
from broker.ingest.service import InboundMessage, IngestService, Outcome, Processed
from broker.kafka.topics import RESULTS
from broker.observability import (
    BATCH_SECONDS,
    CONSUMER_LAG,
    END_TO_END_SECONDS,
    INGEST_PAUSED,
    MESSAGES,
    REJECTED,
    RESULTS_INGESTED,
)
from broker.security.payload_cipher import PayloadCipher
from broker.security.receipt_signing import ReceiptSigner

logger = logging.getLogger(__name__)

FETCH_BYTES = 32 * 1024 * 1024  # oversized messages must still be fetched to reach the DLQ
PROBE_TIMEOUT = 5.0  # a probe stuck on an unanswering host must not stop the polling
# Allocations between young-generation collections once the heap is settled (Python's
# default is 700): a batch allocates hundreds of thousands of short-lived JSON objects.
GC_YOUNG_THRESHOLD = 10_000


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    indexed: int = 0
    duplicates: int = 0
    rejected: int = 0
    kafka_ok: bool = False
    last_error: str | None = None
    paused: bool = False  # partitions paused: the database is unavailable


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
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 10.0,
        probe: Callable[[], Awaitable[object]] | None = None,
        session_timeout_ms: int = 10_000,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`probe`: answers once the database is back (e.g. SELECT 1); without one, the
        paused worker retries the rewound batch when its backoff is over."""
        self._service = service
        self._cipher = cipher  # seals DLQ copies
        self._receipt_signer = receipt_signer  # signs receipts (the adapters verify them)
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._max_records = max_records
        self._retry_seconds = retry_seconds
        self._max_retry_seconds = max_retry_seconds
        self._probe = probe
        self._backoff = retry_seconds  # the next wait while paused; doubles, up to the max
        self._next_probe = 0.0  # loop time of the next probe while paused
        self._outage_started: float | None = None  # until a batch or a probe succeeds
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
            # Stopping while paused: nothing past the rewound batch was committed.
            self.stats.paused = False
            INGEST_PAUSED.set(0)
            await consumer.stop()
            await producer.stop()

    async def _poll_once(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        if self.stats.paused:
            await self._poll_paused(consumer)
            return
        fetched = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
        records = [r for batch in fetched.values() for r in batch]
        if not records:
            await self._update_lag(consumer)  # lag can grow while nothing reaches us
            return
        started = time.perf_counter()
        try:
            processed = await self._service.process_batch([_inbound(r) for r in records])
        except Exception as exc:
            if not retriable(exc):
                raise
            self._pause(consumer, fetched, exc)
            return
        await publish_followups(producer, processed, self._cipher, self._receipt_signer)
        try:
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in fetched.items()})
        except KafkaError as exc:
            # A rebalance or a broker restart: the batch may come again, and the inbox
            # answers it with `duplicate` receipts. Indexed is indexed either way.
            logger.warning("offset commit failed (%r); the batch may be redelivered", exc)
        self._back_to_normal()
        BATCH_SECONDS.observe(time.perf_counter() - started)
        _observe_end_to_end(records)
        self._count(processed)
        self.stats.last_error = None
        _settle_heap()
        await self._update_lag(consumer)

    def _pause(
        self,
        consumer: AIOKafkaConsumer,
        fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        exc: BaseException,
    ) -> None:
        """Rewind the batch and stop fetching until the database answers again."""
        _rewind(consumer, fetched)
        consumer.pause(*consumer.assignment())
        now = asyncio.get_running_loop().time()
        if self._outage_started is None:
            self._outage_started = now
        self._wait_before_next_probe(now)
        self.stats.paused = True
        cause = type(exc.__cause__ or exc).__name__  # the driver's error behind Unavailable
        self.stats.last_error = f"database unavailable: {cause}"
        INGEST_PAUSED.set(1)
        logger.warning(
            "database unavailable (%s); partitions paused, batch rewound, still polling", cause
        )

    async def _poll_paused(self, consumer: AIOKafkaConsumer) -> None:
        """Poll (nothing comes: paused) so the group keeps us; probe when it is time."""
        # Partitions a rebalance assigned meanwhile start unpaused: pause them too.
        consumer.pause(*consumer.assignment())
        loop = asyncio.get_running_loop()
        wait = min(0.5, max(0.0, self._next_probe - loop.time()))
        _rewind(consumer, await consumer.getmany(timeout_ms=int(wait * 1000)))
        await self._update_lag(consumer)
        if loop.time() < self._next_probe:
            return
        if self._probe is not None:
            try:
                await asyncio.wait_for(self._probe(), PROBE_TIMEOUT)
            except Exception as exc:  # any failure: still unusable; the type says why
                self.stats.last_error = f"database unavailable: {type(exc).__name__}"
                self._wait_before_next_probe(loop.time())
                return
            logger.warning(  # at the level of the pause, so the two are seen together
                "database available again after %.1fs; partitions resumed",
                loop.time() - (self._outage_started or loop.time()),
            )
        # The backoff is reset only once a batch is indexed: a database that answers the
        # probe but still refuses the batch (a read-only standby) is retried ever less often.
        consumer.resume(*consumer.assignment())
        self.stats.paused = False
        INGEST_PAUSED.set(0)

    def _wait_before_next_probe(self, now: float) -> None:
        self._next_probe = now + self._backoff
        self._backoff = min(self._backoff * 2, self._max_retry_seconds)

    def _back_to_normal(self) -> None:
        self._backoff = self._retry_seconds
        self._outage_started = None

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


_heap_to_settle = False  # a process that is an ingest worker asks (settle_heap_once_warm)


def settle_heap_once_warm() -> None:
    """Called by `mrb worker` / `mrb up`, whose process the worker owns: after its first
    batch, the heap is settled (below). Not for a library user or a test process, whose
    other objects alive at that moment would never be collected if they later died in a
    cycle."""
    global _heap_to_settle
    _heap_to_settle = True


def _settle_heap() -> None:
    """Once per process, after the first batch: move everything alive (modules, compiled
    validators, catalogs, the matching dictionaries that batch loaded) out of the cyclic
    collector's sight, and collect the young generation less often. The collector
    scanned that long-lived heap again and again during every batch: about 15 % of the
    worker's CPU in the bench (docs/performance.md, fifth round). Garbage is collected
    first, so nothing unreachable is kept; objects made later are collected as before."""
    global _heap_to_settle
    if not _heap_to_settle:
        return
    _heap_to_settle = False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _observe_end_to_end(records: list[ConsumerRecord[bytes, bytes]]) -> None:
    """Seconds from the record's Kafka timestamp (set by the adapter's producer when it
    sent, or by the broker on append) to now, when its batch is indexed and committed."""
    now_ms = time.time() * 1000
    for r in records:
        if r.timestamp is not None and r.timestamp > 0:
            END_TO_END_SECONDS.observe(max(0.0, now_ms - r.timestamp) / 1000)


def _rewind(
    consumer: AIOKafkaConsumer,
    fetched: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
) -> None:
    """Fetch again from each batch's first record (partitions still assigned to us)."""
    assigned = consumer.assignment()
    for tp, batch in fetched.items():
        if batch and tp in assigned:
            consumer.seek(tp, batch[0].offset)


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
