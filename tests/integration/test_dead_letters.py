"""Outbox and DLQ agree: a rejected message, fixed and replayed, ends delivered everywhere.

Real Tansu, a real worker, the real adapter outbox and the `mrb dlq` / `mrb adapter
status` commands, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import Result
from sqlalchemy import select, update
from typer.testing import CliRunner

from adapters.common.delivery import deliver
from adapters.common.outbox import DELIVERED, PENDING, REJECTED
from broker.bootstrap import Container
from broker.cli.adapter_cmd import open_outbox
from broker.cli.main import app
from broker.storage import dead_letters, hospitals
from broker.storage.tables import audit_event, inbox, rejection
from tests import factories as f
from tests.conftest import running_worker as worker
from tests.conftest import seed_hospitals
from tests.polling import eventually

pytestmark = pytest.mark.slow
FAST = timedelta(milliseconds=500)


def env_of(container: Container, kafka: str) -> dict[str, str]:
    s = container.settings
    return {
        "MRB_KAFKA_BOOTSTRAP": kafka,
        "MRB_DATA_DIR": str(s.data_dir),
        "MRB_DATABASE_URL": s.database_url or "",
        "MRB_DATABASE_SCHEMA": s.database_schema or "",
        "MRB_OPERATOR": "ops.wang",
        "COLUMNS": "250",
    }


async def mrb(env: dict[str, str], *args: str) -> Result:
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


async def letters(c: Container) -> dict[str, dead_letters.DeadLetter]:
    async with c.sessions() as s:
        return {d.code: d for d in await dead_letters.listing(s)}


async def test_rejected_fixed_replayed_is_delivered_and_resolved_once(
    container: Container, kafka: str
) -> None:
    env = env_of(container, kafka)
    trust = f.receipt_trust(container.settings.keys_dir)
    stray = f.outgoing(f.lab_bundle(accession="LATE-1"), hospital="H003")  # not registered
    broken = f.outgoing(b'{"hb": 13.2}')  # NOT_FHIR: stays open
    good = f.outgoing(f.lab_bundle(accession="OK-1"), key=b"p2")
    box = open_outbox(container.settings)  # the adapter's, in MRB_DATA_DIR as `mrb adapter`
    try:
        box.add([(stray, "late.json"), (broken, "broken.json"), (good, "ok.json")])
        async with worker(container, kafka):
            first = await deliver(box, kafka, trust=trust, resend_after=FAST, timeout=30)
            assert first.pending == set()
            assert box.counts() == {PENDING: 0, DELIVERED: 1, REJECTED: 2}

            # The broker keeps both dead letters, open, their values sealed.
            found = await letters(container)
            assert set(found) == {"UNKNOWN_HOSPITAL", "NOT_FHIR"}
            assert all(d.status == "open" and d.stored for d in found.values())
            async with container.sessions() as s:
                blobs = [r[0] for r in await s.execute(select(rejection.c.value_sealed))]
            assert all(b"LATE-1" not in b and b"13.2" not in b for b in blobs)
            listed = await mrb(env, "dlq", "list", "--status", "open")
            assert stray.message_id in listed.stdout and broken.message_id in listed.stdout
            assert "LATE-1" not in listed.output
            assert f"mrb: data folder {container.settings.data_dir.resolve()}" in listed.stderr

            # The fix: H003 and its key are registered. Replay sends the open one only.
            await seed_hospitals(container, hospitals.Hospital("H003", "Third", "510503", "2"))
            replay = await mrb(env, "dlq", "replay", "--code", "UNKNOWN_HOSPITAL")
            assert "replayed 1 message(s)" in replay.stdout
            await eventually(
                lambda: _resolved(container, "UNKNOWN_HOSPITAL"),
                what="the replayed message was indexed",
            )
            again = await mrb(env, "dlq", "replay", "--code", "UNKNOWN_HOSPITAL")
            assert "nothing to replay" in again.stdout

            # The adapter's next delivery reads the receipt sent while it was not running.
            caught = await deliver(box, kafka, trust=trust, resend_after=FAST, timeout=30)
        assert caught.receipts[stray.message_id].outcome == "indexed"
        assert box.counts() == {PENDING: 0, DELIVERED: 2, REJECTED: 1}
        assert box.replayed_count() == 1
    finally:
        box.close()
    status = await mrb(env, "adapter", "status")
    assert "delivered: 2 (1 after a rejection, replayed by the broker), rejected: 1" in (
        status.stdout
    )
    async with container.sessions() as s:
        indexed = (
            await s.execute(select(inbox.c.outcome).where(inbox.c.message_id == stray.message_id))
        ).scalar_one()
    assert indexed == "indexed"
    found = await letters(container)
    resolved, still_open = found["UNKNOWN_HOSPITAL"], found["NOT_FHIR"]
    assert resolved.replays == 1 and resolved.replayed_by == "ops.wang"
    assert still_open.status == "open" and still_open.replays == 0

    # Purge: values older than the retention go, rows stay; the young one is kept.
    async with container.sessions() as s, s.begin():
        await s.execute(
            update(rejection)
            .where(rejection.c.id == resolved.id)
            .values(rejected_at=datetime.now(UTC) - timedelta(days=91))
        )
    purged = await mrb(env, "dlq", "purge")
    assert "purged the stored values of 1 dead letter(s)" in purged.stdout
    found = await letters(container)
    assert found["UNKNOWN_HOSPITAL"].status == "resolved" and not found["UNKNOWN_HOSPITAL"].stored
    assert found["UNKNOWN_HOSPITAL"].purged_at is not None
    assert found["NOT_FHIR"].stored and found["NOT_FHIR"].status == "open"
    await mrb(env, "dlq", "purge", "--older-than", "0")
    found = await letters(container)
    assert found["NOT_FHIR"].status == "purged" and not found["NOT_FHIR"].stored
    assert found["NOT_FHIR"].detail and found["NOT_FHIR"].rejected_at
    nothing = await mrb(env, "dlq", "replay")
    assert "nothing to replay" in nothing.stdout
    async with container.sessions() as s:
        actions = [r[0] for r in await s.execute(select(audit_event.c.action))]
    assert actions.count("dlq.replay") == 1 and actions.count("dlq.purge") == 2


async def test_a_message_rejected_twice_is_replayed_once(container: Container) -> None:
    """An adapter resends until its receipt arrives, so one message can be rejected twice:
    both rows are settled by one replay, and the message is sent once."""
    stray = f.inbound(f.lab_bundle(accession="TWICE-1"), hospital="H003")  # not registered
    for _ in range(2):  # two batches: the second is not a copy within one batch
        await container.ingest_service().process_batch([stray])
    async with container.sessions() as s, s.begin():
        rows = (await s.execute(select(rejection.c.id, rejection.c.status))).all()
        claimed = await dead_letters.claim_for_replay(
            s, container.cipher, by="ops.test", now=datetime.now(UTC)
        )
    assert len(rows) == 2
    assert [c.message_id for c in claimed] == [stray.header("mrb-message-id")]
    assert {d.status for d in (await letters(container)).values()} == {"replayed"}


async def _resolved(c: Container, code: str) -> bool:
    return (await letters(c))[code].status == "resolved"
