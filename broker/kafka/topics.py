"""Topic names fixed by DESIGN.md, and creating them where they are missing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from mrb_wire.topics import RECEIPTS, RECOGNITION, RESULTS, RESULTS_DLQ

logger = logging.getLogger(__name__)

__all__ = [
    "RECEIPTS",
    "RECOGNITION",
    "RESULTS",
    "RESULTS_DLQ",
    "default_partitions",
    "ensure_topics",
]


def default_partitions(results_partitions: int) -> dict[str, int]:
    return {
        RESULTS: results_partitions,
        RESULTS_DLQ: 3,
        RECEIPTS: 3,
        RECOGNITION: 3,
    }


async def ensure_topics(
    bootstrap: str, partitions: dict[str, int], options: Mapping[str, Any] | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=10000, **dict(options or {})
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(n, p, 1) for n, p in partitions.items() if n not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                logger.info("topics created concurrently by another process")
        return [t.name for t in missing]
    finally:
        await admin.close()
