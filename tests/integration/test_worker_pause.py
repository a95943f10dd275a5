"""A database that answers but refuses writes (a standby after a failover, read-only)
pauses ingest: nothing is rejected or dead-lettered, no receipt is sent, and the batch is
indexed once writes are accepted again. (The TCP-level outage, with a real `mrb worker`
process, is in tests/e2e/test_worker_faults.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, func, select

from adapters.common.publisher import Publisher, ReceiptWatcher
from broker.bootstrap import Container
from broker.kafka.reading import read_topic
from broker.kafka.topics import RESULTS_DLQ
from broker.storage.database import create_engine, session_factory
from broker.storage.tables import inbox, rejection
from tests import factories as f
from tests.conftest import running_worker
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_a_read_only_database_pauses_ingest_and_rejects_nothing(
    container: Container, kafka: str
) -> None:
    read_only = True
    settings = container.settings
    engine = create_engine(settings.resolved_database_url, schema=settings.database_schema)

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:  # PostgreSQL itself refuses the writes (SQLSTATE 25006)
        if read_only:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    await container.engine.dispose()
    container.engine, container.sessions = engine, session_factory(engine)
    messages = [
        f.outgoing(f.lab_bundle(accession=f"RO{i}"), key=f"p{i}".encode()) for i in range(6)
    ]
    trust = f.receipt_trust(container.settings.keys_dir)
    async with (
        running_worker(container, kafka),
        ReceiptWatcher(kafka, trust=trust) as watcher,
        Publisher(kafka) as publisher,
    ):
        (worker,) = container.workers
        await publisher.publish(messages)
        await eventually(lambda: worker.stats.paused, within=20, what="the worker paused")
        assert worker.stats.paused and "database unavailable" in (worker.stats.last_error or "")
        wanted = {m.message_id: m.hospital for m in messages}
        await asyncio.sleep(2)  # probes answer, batches are refused: retried, not rejected
        assert await watcher.poll(wanted, timeout_ms=1000) == []
        assert await read_topic(kafka, RESULTS_DLQ) == []

        read_only = False
        receipts = await watcher.wait_for(wanted, timeout=30)
    assert {r.outcome for r in receipts.values()} == {"indexed"}
    assert not worker.stats.paused
    async with container.sessions() as s:
        assert (await s.execute(select(func.count()).select_from(inbox))).scalar_one() == 6
        assert (await s.execute(select(func.count()).select_from(rejection))).scalar_one() == 0
