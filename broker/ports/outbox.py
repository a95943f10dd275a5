"""Port of relaying the recognition event outbox to Kafka (broker/kafka/event_relay.py)."""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any

from broker.ports.unit_of_work import UnitOfWork


class PendingEvents(abc.ABC):
    @abc.abstractmethod
    async def claim(self, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        """The oldest unpublished events (id, key, payload), held until commit against
        other relays."""

    @abc.abstractmethod
    async def mark_published(self, ids: list[int], now: datetime) -> None: ...


class OutboxUnitOfWork(UnitOfWork):
    """One relay pass: the events claimed are marked published in the same transaction."""

    events: PendingEvents
