"""Reading a whole topic from the beginning (operator tools: DLQ listing and replay)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

FETCH_BYTES = 32 * 1024 * 1024


async def read_topic(
    bootstrap: str, topic: str, options: Mapping[str, Any] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently in `topic`, without joining a consumer group."""
    consumer = AIOKafkaConsumer(
        **dict(options or {}),
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
        fetch_max_bytes=FETCH_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        # Stop on the high watermark of fetch responses: Tansu 0.6 answers ListOffsets
        # (end_offsets) with the last batch's base offset + 1, which can be too low.
        while True:
            fetched = await consumer.getmany(timeout_ms=500)
            for batch in fetched.values():
                records.extend(batch)
            if fetched:
                continue
            positions = [await consumer.position(tp) for tp in tps]
            if all(
                pos >= (consumer.highwater(tp) or 0) for pos, tp in zip(positions, tps, strict=True)
            ):
                return records
    finally:
        await consumer.stop()
