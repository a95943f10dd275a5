"""What a long-running adapter (MLLP or DICOM listener, FHIR poller) exports to
Prometheus: its outbox, read at each scrape.

The scrape runs on the metrics server's thread, so it opens the outbox file on its own,
read-only (the adapter's connection belongs to its loop's thread). Labels are the
hospital ids the adapter sends as and fixed words; nothing of a message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.common.outbox import DELIVERED, PENDING, REJECTED

STATES = (PENDING, DELIVERED, REJECTED)


class OutboxCollector(Collector):
    """mrb_outbox_messages{hospital,state} (state `rejected` is the hospital's view of
    the broker's DLQ: its messages refused and not yet replayed into the index),
    mrb_outbox_oldest_pending_seconds{hospital}, mrb_outbox_receipt_refusals{hospital,
    reason}, and mrb_outbox_up (0 when the file cannot be read)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        messages, oldest, refusals, up = self._families()
        try:
            rows, refused = self._read()
        except sqlite3.Error:
            up.add_metric([], 0)
            return iter((up,))
        now = datetime.now(UTC)
        counts: dict[tuple[str, str], int] = {}
        for hospital, state, count, first_pending in rows:
            counts[(hospital, state)] = count
            if state == PENDING and first_pending:
                age = now - datetime.fromisoformat(first_pending)
                oldest.add_metric([hospital], max(0.0, age.total_seconds()))
        for hospital in sorted({h for h, _ in counts}):
            for state in STATES:  # every state, 0 included, so rates and alerts see it
                messages.add_metric([hospital, state], counts.get((hospital, state), 0))
        for hospital, reason, count in refused:
            refusals.add_metric([hospital, reason], count)
        up.add_metric([], 1)
        return iter((messages, oldest, refusals, up))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "mrb_outbox_messages",
                "Messages in the adapter's outbox by state (rejected: refused by the broker)",
                labels=["hospital", "state"],
            ),
            GaugeMetricFamily(
                "mrb_outbox_oldest_pending_seconds",
                "Age of the oldest message still waiting for its receipt",
                labels=["hospital"],
            ),
            GaugeMetricFamily(
                "mrb_outbox_receipt_refusals",
                "Receipts the adapter did not believe (unsigned, unknown key ...)",
                labels=["hospital", "reason"],
            ),
            GaugeMetricFamily("mrb_outbox_up", "1 if the outbox file could be read"),
        )

    def _read(self) -> tuple[list[tuple[str, str, int, str | None]], list[tuple[str, str, int]]]:
        db = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT hospital, state, COUNT(*), "
                "MIN(CASE WHEN state = ? THEN created_at END) FROM outbox "
                "GROUP BY hospital, state",
                (PENDING,),
            ).fetchall()
            refused = db.execute("SELECT hospital, reason, count FROM receipt_refusals").fetchall()
        finally:
            db.close()
        return rows, refused


def outbox_registry(path: Path) -> CollectorRegistry:
    """A registry of the outbox at `path` alone (not the broker's metrics)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(OutboxCollector(path))
    return registry
