"""End-to-end delivery: outbox + receipts give exactly-once indexing whatever fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.common.delivery import deliver
from adapters.common.outbox import DELIVERED, PENDING, Outbox
from adapters.common.publisher import Publisher, ReceiptWatcher
from broker.bootstrap import Container
from broker.kafka.embedded import EmbeddedKafka
from broker.kafka.topics import default_partitions, ensure_topics
from broker.storage.tables import inbox, result, result_version
from tests import factories as f
from tests.conftest import free_port
from tests.conftest import running_worker as worker
from tests.polling import eventually

pytestmark = pytest.mark.slow
FAST = timedelta(milliseconds=300)


async def restart(kafka: EmbeddedKafka) -> None:
    await kafka.stop()
    await kafka.start()
    await ensure_topics(kafka.bootstrap, default_partitions(3))


def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db", b"k" * 32)


def batch(prefix: str, n: int) -> list[tuple[object, str]]:
    return [
        (
            f.outgoing(f.lab_bundle(accession=f"{prefix}{i}"), key=f"p{i}".encode()),
            f"{prefix}{i}.json",
        )
        for i in range(n)
    ]


async def count(c: Container, table: object) -> int:
    async with c.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def test_broker_restart_loses_nothing_and_indexes_exactly_once(
    container: Container, tmp_path: Path
) -> None:
    port = free_port()
    kafka = EmbeddedKafka(port)
    await kafka.start()
    await ensure_topics(kafka.bootstrap, default_partitions(3))
    box = outbox(tmp_path)
    try:
        # 1. Five messages are indexed, but the adapter dies before reading their receipts.
        early = batch("A", 5)
        box.add(early)  # type: ignore[arg-type]
        async with worker(container, kafka.bootstrap):
            async with Publisher(kafka.bootstrap) as pub:
                await pub.publish(m for m, _ in early)  # type: ignore[attr-defined]
            box.mark_sent([m.message_id for m, _ in early], datetime.now(UTC), FAST)  # type: ignore[attr-defined]
            await eventually(
                lambda: _equals(count(container, inbox), 5), within=10, what="5 indexed"
            )
        await restart(kafka)  # ...and their receipts are gone with the broker's memory.
        # 2. Twenty more are sent while no worker runs: they sit in the broker's memory...
        late = batch("B", 20)
        box.add(late)  # type: ignore[arg-type]
        trust = f.receipt_trust(container.settings.keys_dir)
        first = await deliver(
            box, kafka.bootstrap, trust=trust, resend_after=timedelta(minutes=5), timeout=1.0
        )
        assert first.sent == 20 and len(first.pending) == 25
        # 3. ...and the broker restarts, losing every message it held.
        await restart(kafka)
        assert box.counts()[PENDING] == 25
        # 4. The outbox resends everything still pending once its timeout passes.
        box.mark_sent(box.pending_ids(), datetime.now(UTC) - timedelta(minutes=10), FAST)
        async with worker(container, kafka.bootstrap):
            report = await deliver(box, kafka.bootstrap, trust=trust, resend_after=FAST, timeout=40)
        assert report.pending == set()
        outcomes = sorted(r.outcome for r in report.receipts.values())
        assert outcomes == ["duplicate"] * 5 + ["indexed"] * 20
        assert box.counts() == {PENDING: 0, DELIVERED: 25, "rejected": 0}
        # Exactly once: 25 messages, 25 results, one version each.
        assert await count(container, inbox) == 25
        assert await count(container, result) == 25
        assert await count(container, result_version) == 25
    finally:
        box.close()
        await kafka.stop()


async def test_adapter_crash_between_send_and_receipt(
    container: Container, kafka: str, tmp_path: Path
) -> None:
    messages = batch("C", 6)
    box = outbox(tmp_path)
    box.add(messages)  # type: ignore[arg-type]
    trust = f.receipt_trust(container.settings.keys_dir)
    async with worker(container, kafka):
        crashed = await deliver(box, kafka, trust=trust, resend_after=FAST, timeout=0.01)  # sent
        assert crashed.sent == 6
        box.close()  # the process dies here
        reopened = outbox(tmp_path)
        try:
            assert len(reopened.pending_ids()) == 6 - len(crashed.receipts)
            report = await deliver(reopened, kafka, trust=trust, resend_after=FAST, timeout=30)
            assert report.pending == set()
            assert reopened.counts()[DELIVERED] == 6
        finally:
            reopened.close()
    assert await count(container, inbox) == 6 and await count(container, result) == 6


async def test_duplicate_sends_are_counted_once(container: Container, kafka: str) -> None:
    message = f.outgoing(f.lab_bundle(accession="DUP"))
    seen: list[str] = []
    async with (
        worker(container, kafka),
        ReceiptWatcher(kafka, trust=f.receipt_trust(container.settings.keys_dir)) as watcher,
        Publisher(kafka) as pub,
    ):
        for _ in range(3):
            await pub.publish([message])
        for _ in range(100):
            seen += [r.outcome for r in await watcher.poll({message.message_id: "H001"})]
            if len(seen) == 3:
                break
    assert sorted(seen) == ["duplicate", "duplicate", "indexed"]
    assert await count(container, result_version) == 1


def test_outbox_holds_no_clear_payload_and_erases_it_on_receipt(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    value = f.lab_bundle()
    ((message, _),) = [(f.outgoing(value), "张三_血常规.json")]
    box.add([(message, "张三_血常规.json")])
    raw = (tmp_path / "outbox.db").read_bytes()
    assert f.PATIENT_A.encode() not in raw and "张三".encode() not in raw
    (entry,) = box.due(None, datetime.now(UTC))
    assert entry.message == message and entry.origin == "张三_血常规.json"
    assert box.settle(message.message_id, "rejected", "NOT_FHIR", "no resourceType")
    assert not box.settle(message.message_id, "rejected", "NOT_FHIR", "again")  # settled once
    (row,) = box.listing("rejected")
    assert row.error_code == "NOT_FHIR" and row.origin == "张三_血常规.json"
    assert box._db.execute("SELECT sealed FROM outbox").fetchone() == (None,)
    box.close()


async def test_broker_restart_under_a_running_worker_and_adapter(
    container: Container, tmp_path: Path
) -> None:
    """Neither the worker nor the adapter has to be restarted with the broker."""
    kafka = EmbeddedKafka(free_port())
    await kafka.start()
    await ensure_topics(kafka.bootstrap, default_partitions(3))
    box = outbox(tmp_path)
    box.add(batch("R", 60))  # type: ignore[arg-type]
    container.settings.batch_max_records = 3  # small batches, so the restart lands mid-stream
    try:
        async with worker(container, kafka.bootstrap):
            trust = f.receipt_trust(container.settings.keys_dir)
            delivery = asyncio.create_task(
                deliver(
                    box, kafka.bootstrap, trust=trust, resend_after=timedelta(seconds=3), timeout=90
                )
            )
            await eventually(lambda: box.counts()[DELIVERED] >= 5, every=0.05)  # mid-stream
            await restart(kafka)
            report = await delivery
        assert report.pending == set() and box.counts()[DELIVERED] == 60
        assert await count(container, result) == 60
        assert await count(container, result_version) == 60
    finally:
        box.close()
        await kafka.stop()


async def _equals(count: Awaitable[int], wanted: int) -> bool:
    return await count == wanted
