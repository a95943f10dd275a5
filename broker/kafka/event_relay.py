"""Publishes the recognition event outbox to mrb.recognition.v1 (at least once).

Rows are marked published only after Kafka acknowledged them; a crash in between sends
them again, so consumers deduplicate by `event_id`. Per ordering hospital (the key),
events keep their outbox order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from broker.kafka.topics import RECOGNITION
from broker.ports.outbox import OutboxUnitOfWork
from broker.storage.outage import is_outage

logger = logging.getLogger(__name__)


class EventRelay:
    def __init__(
        self,
        uow: Callable[[], OutboxUnitOfWork],
        *,
        bootstrap: str,
        interval: float = 1.0,
        batch: int = 200,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._uow = uow
        self._bootstrap = bootstrap
        self._interval = interval
        self._batch = batch
        self._kafka_options = dict(kafka_options or {})
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop`; Kafka or database outages only delay events."""
        wait = 1.0
        while not stop.is_set():
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=False,  # Tansu has no idempotent producer
                **self._kafka_options,
            )
            try:
                await producer.start()
                while not stop.is_set():
                    sent = await self.publish_pending(producer)
                    wait = 1.0  # Kafka and the database both answered
                    if sent < self._batch:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self._interval)
            except Exception as exc:  # a lost database connection is a DBAPIError too
                if not (isinstance(exc, KafkaError) or is_outage(exc)):
                    raise
                # The type only: a database error's text holds its statement's parameters.
                logger.warning(
                    "event relay paused (%s); retrying in %.0fs", type(exc).__name__, wait
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                wait = min(wait * 2, 30.0)
            finally:
                await producer.stop()

    async def publish_pending(self, producer: AIOKafkaProducer) -> int:
        """One pass: send the oldest unpublished events, mark them once acknowledged."""
        async with self._uow() as uow:
            pending = await uow.events.claim(self._batch)
            if not pending:
                return 0
            sent = [
                await producer.send(
                    RECOGNITION,
                    json.dumps(payload, ensure_ascii=False).encode(),
                    key=key.encode(),
                    headers=[("mrb-event-type", str(payload.get("type", "")).encode())],
                )
                for _, key, payload in pending
            ]
            await asyncio.gather(*sent)
            await uow.events.mark_published([i for i, _, _ in pending], datetime.now(UTC))
            await uow.commit()
        self.published += len(pending)
        return len(pending)
