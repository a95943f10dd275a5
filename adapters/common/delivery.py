"""Deliver an outbox: send what is due, settle verified receipts, resend after a timeout.

Only a receipt the broker signed for the message's hospital with a trusted receipt key
settles a message (adapters/common/receipts.py). Any other receipt for a pending message
is refused: logged, counted in the outbox (`mrb adapter status`), and the message stays
pending, so it is resent and settled by the broker's real receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import KafkaError

from adapters.common.outbox import Outbox
from adapters.common.publisher import Publisher, ReceiptWatcher
from adapters.common.receipts import Receipt, ReceiptTrust, Refusal

logger = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    sent: int = 0
    resent: int = 0
    receipts: dict[str, Receipt] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)  # receipts not believed


async def deliver(
    outbox: Outbox,
    bootstrap: str,
    *,
    trust: ReceiptTrust,
    hospital: str | None = None,
    options: Mapping[str, Any] | None = None,
    resend_after: timedelta = timedelta(seconds=30),
    timeout: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> DeliveryReport:
    """Run until nothing of `hospital` is pending or `timeout` seconds pass.

    Every pending message is sent when due; one without a receipt is sent again after
    `resend_after`, then after twice that, and so on (the broker answers a resend of
    something it already indexed with a `duplicate` receipt). Receipts are believed only
    when `trust` verifies them; with an empty `trust` nothing settles.
    """
    report = DeliveryReport()
    deadline = time.monotonic() + timeout
    total = len(outbox.pending_ids(hospital))

    def refused(refusal: Refusal) -> None:
        outbox.record_refusal(refusal)
        report.refused.append(refusal)

    # From where this outbox stopped reading receipts: a receipt sent while no adapter
    # watched (a DLQ replay's) still settles its message.
    saved = outbox.receipt_positions()
    watcher = ReceiptWatcher(bootstrap, options, trust=trust, on_refused=refused, start=saved)

    async def save_position() -> None:
        nonlocal saved
        now = await watcher.positions()
        if now != saved:
            outbox.save_receipt_positions(now)
            saved = now

    async with watcher, Publisher(bootstrap, options) as pub:
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
                    for e in due:
                        logger.info(
                            "message sent",
                            extra={
                                "message_id": e.message.message_id,
                                "hospital": e.message.hospital,
                                "attempt": e.attempts + 1,
                            },
                        )
                    report.sent += sum(1 for e in due if e.attempts == 0)
                    report.resent += sum(1 for e in due if e.attempts > 0)
            pending = outbox.pending_ids(hospital)
            if progress is not None:
                progress(total - len(pending), total)
            if (not pending and await watcher.caught_up()) or time.monotonic() >= deadline:
                report.pending = pending
                await save_position()
                return report
            # Every hospital's messages in this outbox, rejected ones too: the saved
            # position moves past whatever is read here.
            wanted = outbox.awaiting_receipts()
            for receipt in await watcher.poll(wanted):
                settled = outbox.settle(
                    receipt.message_id, receipt.outcome, receipt.error_code, receipt.error_detail
                )
                if settled:
                    _log_receipt(receipt)
                if settled and hospital in (None, wanted[receipt.message_id]):
                    report.receipts[receipt.message_id] = receipt
            await save_position()


def _log_receipt(receipt: Receipt) -> None:
    """The receipt line: the same message id as when it was stored and sent."""
    logger.log(
        logging.WARNING if receipt.outcome == "rejected" else logging.INFO,
        "receipt %s",
        receipt.outcome,
        extra={
            "message_id": receipt.message_id,
            "hospital": receipt.hospital,
            "outcome": receipt.outcome,
            "error_code": receipt.error_code,
            "results": receipt.results,
            "receipt_key_id": receipt.key_id,
        },
    )


async def deliver_continuously(
    outbox: Outbox,
    bootstrap: str,
    stop: asyncio.Event,
    *,
    trust: ReceiptTrust,
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
                    trust=trust,
                    hospital=hospital,
                    options=options,
                    resend_after=resend_after,
                    timeout=max(idle, 5.0),
                )
            except sqlite3.Error as exc:
                # The outbox's disk is full or failing: what it holds stays, the listener
                # keeps answering (AE for what it cannot store); this loop tries again.
                logger.error("outbox write failed (%s); delivery retries", type(exc).__name__)
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
