"""Deliver an outbox: send what is due, settle receipts, resend after a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError

from adapters.common.outbox import Outbox
from adapters.common.publisher import Publisher, Receipt, ReceiptWatcher

logger = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    sent: int = 0
    resent: int = 0
    receipts: dict[str, Receipt] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


async def deliver(
    outbox: Outbox,
    bootstrap: str,
    *,
    hospital: str | None = None,
    options: Mapping[str, Any] | None = None,
    resend_after: timedelta = timedelta(seconds=30),
    timeout: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> DeliveryReport:
    """Run until nothing of `hospital` is pending or `timeout` seconds pass.

    Every pending message is sent when due; one without a receipt is sent again after
    `resend_after`, then after twice that, and so on (the broker answers a resend of
    something it already indexed with a `duplicate` receipt).
    """
    report = DeliveryReport()
    deadline = time.monotonic() + timeout
    total = len(outbox.pending_ids(hospital))
    async with ReceiptWatcher(bootstrap, options) as watcher, Publisher(bootstrap, options) as pub:
        while True:
            due = outbox.due(hospital, datetime.now(UTC))
            if due:
                try:
                    await asyncio.wait_for(
                        pub.publish(e.message for e in due), max(1.0, deadline - time.monotonic())
                    )
                except (KafkaError, TimeoutError) as exc:
                    report.errors.append(f"send failed, will retry: {exc!r}")
                    logger.warning("send failed; messages stay in the outbox: %r", exc)
                else:
                    outbox.mark_sent(
                        [e.message.message_id for e in due], datetime.now(UTC), resend_after
                    )
                    report.sent += sum(1 for e in due if e.attempts == 0)
                    report.resent += sum(1 for e in due if e.attempts > 0)
            pending = outbox.pending_ids(hospital)
            if progress is not None:
                progress(total - len(pending), total)
            if not pending or time.monotonic() >= deadline:
                report.pending = pending
                return report
            for receipt in await watcher.poll(pending):
                if outbox.settle(
                    receipt.message_id, receipt.outcome, receipt.error_code, receipt.error_detail
                ):
                    report.receipts[receipt.message_id] = receipt


async def deliver_continuously(
    outbox: Outbox,
    bootstrap: str,
    stop: asyncio.Event,
    *,
    hospital: str | None = None,
    options: Mapping[str, Any] | None = None,
    resend_after: timedelta = timedelta(seconds=30),
    idle: float = 1.0,
    on_report: Callable[[DeliveryReport], Awaitable[None] | None] | None = None,
) -> None:
    """For listening adapters: deliver whatever the outbox holds until `stop` is set.

    Kafka being unreachable only delays delivery: messages wait in the outbox.
    """
    while not stop.is_set():
        if outbox.pending_ids(hospital):
            try:
                report = await deliver(
                    outbox,
                    bootstrap,
                    hospital=hospital,
                    options=options,
                    resend_after=resend_after,
                    timeout=max(idle, 5.0),
                )
            except (KafkaError, OSError) as exc:
                logger.warning("Kafka unavailable (%r); messages wait in the outbox", exc)
            else:
                if on_report is not None:
                    done = on_report(report)
                    if done is not None:
                        await done
                if not report.pending:
                    continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), idle)
