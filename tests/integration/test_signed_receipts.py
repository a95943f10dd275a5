"""Signed receipts against a real Kafka protocol broker (Tansu) and a real worker.

Anyone able to write mrb.receipts.v1 could otherwise make an adapter erase a message it
believes indexed (a result silently lost) or rejected. Only receipts the broker signed for
the message's hospital with a trusted key settle the outbox; the rest are refused,
counted, and the message is resent until the real receipt arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from typer.testing import CliRunner

from adapters.common.delivery import deliver
from adapters.common.envelope import RECEIPTS_TOPIC
from adapters.common.outbox import DELIVERED, PENDING, REJECTED, Outbox
from adapters.common.receipts import (
    BAD_SIGNATURE,
    OTHER_HOSPITAL,
    UNKNOWN_KEY,
    UNSIGNED,
    ReceiptTrust,
)
from broker.bootstrap import Container
from broker.cli.adapter_cmd import open_outbox
from broker.cli.main import app
from broker.security.receipt_signing import (
    RECEIPT_PUBLIC_FILE,
    ReceiptSigner,
    load_receipt_signer,
    rotate_receipt_key,
)
from broker.settings import Settings
from broker.storage.tables import inbox
from tests import factories as f
from tests.conftest import running_worker as worker
from tests.polling import eventually

pytestmark = pytest.mark.slow
FAST = timedelta(milliseconds=400)


def receipt(message_id: str, hospital: str, outcome: str = "indexed") -> bytes:
    """A receipt value exactly as the broker writes one."""
    return json.dumps(
        {
            "message_id": message_id,
            "hospital": hospital,
            "outcome": outcome,
            "error_code": "NOT_FHIR" if outcome == "rejected" else None,
            "error_detail": "forged" if outcome == "rejected" else None,
            "results": 1,
            "processed_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def write_receipts(kafka: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    """What anyone with write access to the receipts topic can do."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(RECEIPTS_TOPIC, value, key=b"H001", headers=headers)
    finally:
        await producer.stop()


def attempts(box: Outbox) -> dict[str, int]:
    return {s.message_id: s.attempts for s in box.listing(PENDING, limit=1000)}


async def indexed(container: Container) -> int:
    async with container.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(inbox))).scalar_one())


async def test_forged_receipts_do_not_settle_and_the_real_one_does(
    container: Container, kafka: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.common.publisher")
    adapter_dir = tmp_path / "adapter"
    box = open_outbox(Settings(data_dir=adapter_dir))  # what `mrb adapter status` reads
    m = f.outgoing(f.lab_bundle(accession="FORGE-M"), key=b"pm")
    n = f.outgoing(f.lab_bundle(accession="FORGE-N"), key=b"pn")
    box.add([(m, "m.json"), (n, "n.json")])
    broker_key = load_receipt_signer(container.settings.keys_dir, create=True)
    trust = ReceiptTrust.configured([broker_key.public_entry])
    impostor = ReceiptSigner.from_seed(b"\x07" * 32)  # a key of its own, under its own id
    try:
        # No worker yet: the messages wait in Kafka, and no real receipt can come.
        delivery = asyncio.create_task(
            deliver(box, kafka, trust=trust, resend_after=FAST, timeout=50)
        )
        await eventually(lambda: len(attempts(box)) == 2 and min(attempts(box).values()) >= 1)

        forged_indexed = receipt(m.message_id, "H001")
        mis_signed = [
            ("mrb-key-id", broker_key.key_id.encode()),  # the broker's key id, another key
            impostor.headers("H001", forged_indexed)[1],
        ]
        theirs = receipt(m.message_id, "H002")  # a real receipt for H002 reusing m's id
        other_real = receipt(str(uuid.uuid4()), "H001", "rejected")  # a real one, re-pointed
        repointed = json.dumps({**json.loads(other_real), "message_id": n.message_id}).encode()
        await write_receipts(
            kafka,
            [
                (forged_indexed, []),  # unsigned
                (forged_indexed, mis_signed),
                (receipt(n.message_id, "H001", "rejected"), impostor.headers("H001", b"x")),
                (theirs, broker_key.headers("H002", theirs)),
                (repointed, broker_key.headers("H001", other_real)),
            ],
        )
        await eventually(lambda: sum(r.count for r in box.refusals()) >= 5)
        reasons = {r.reason: r.count for r in box.refusals("H001")}
        assert reasons == {UNSIGNED: 1, BAD_SIGNATURE: 2, UNKNOWN_KEY: 1, OTHER_HOSPITAL: 1}
        assert box.counts() == {PENDING: 2, DELIVERED: 0, REJECTED: 0}  # nothing settled
        # Still pending, so sent again after the timeout.
        await eventually(lambda: min(attempts(box).values()) >= 2)
        assert "receipt refused for message" in caplog.text

        status = CliRunner().invoke(
            app,
            ["adapter", "status", "--hospital", "H001"],
            env={
                "MRB_DATA_DIR": str(adapter_dir),
                "MRB_RECEIPT_PUBLIC_KEYS": broker_key.public_entry,
                "COLUMNS": "300",
            },
        )
        assert status.exit_code == 0, status.output
        assert "pending: 2, delivered: 0, rejected: 0, receipts refused: 5" in status.output
        assert f"receipt keys trusted: {broker_key.key_id}" in status.output
        for reason in (UNSIGNED, BAD_SIGNATURE, UNKNOWN_KEY, OTHER_HOSPITAL):
            assert reason in status.output

        # The worker starts: its signed receipts settle both messages, as indexed.
        async with worker(container, kafka):
            report = await delivery
        assert report.pending == set()
        assert {mid: r.outcome for mid, r in report.receipts.items()} == {
            m.message_id: "indexed",
            n.message_id: "indexed",
        }
        assert {r.key_id for r in report.receipts.values()} == {broker_key.key_id}
        assert box.counts() == {PENDING: 0, DELIVERED: 2, REJECTED: 0}
        assert sorted(r.reason for r in report.refused) == sorted(
            [UNSIGNED, BAD_SIGNATURE, BAD_SIGNATURE, UNKNOWN_KEY, OTHER_HOSPITAL]
        )
        assert await indexed(container) == 2
    finally:
        box.close()


async def test_no_receipt_key_configured_means_nothing_settles(
    container: Container, kafka: str, tmp_path: Path
) -> None:
    """The secure default: without a trusted key even the broker's real receipts are
    refused; the message stays pending and is settled once the key is configured."""
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    message = f.outgoing(f.lab_bundle(accession="NOKEY"))
    box.add([(message, "nokey.json")])
    try:
        async with worker(container, kafka):
            blind = await deliver(box, kafka, trust=ReceiptTrust(), resend_after=FAST, timeout=8)
            assert blind.pending == {message.message_id} and blind.receipts == {}
            assert {r.reason for r in blind.refused} == {"no-key-configured"}
            trust = f.receipt_trust(container.settings.keys_dir)
            done = await deliver(box, kafka, trust=trust, resend_after=FAST, timeout=30)
        assert done.pending == set()
        assert done.receipts[message.message_id].outcome == "duplicate"  # indexed before
        assert box.counts()[DELIVERED] == 1
        assert await indexed(container) == 1
    finally:
        box.close()


async def test_a_rotated_receipt_key_is_accepted_while_both_are_trusted(
    container: Container, kafka: str, tmp_path: Path
) -> None:
    keys = container.settings.keys_dir
    old = load_receipt_signer(keys, create=True)
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    a, b, c = (
        f.outgoing(f.lab_bundle(accession=f"ROT-{x}"), key=x.encode()) for x in ("A", "B", "C")
    )
    only_old = ReceiptTrust.configured([old.public_entry])
    try:
        async with worker(container, kafka):  # started before the rotation: signs with old
            _, new = rotate_receipt_key(keys)
            both = ReceiptTrust.configured(file=keys / RECEIPT_PUBLIC_FILE)
            assert both.key_ids() == sorted([old.key_id, new.key_id])
            box.add([(a, "a.json")])
            first = await deliver(box, kafka, trust=both, resend_after=FAST, timeout=30)
        assert first.receipts[a.message_id].key_id == old.key_id

        box.add([(b, "b.json")])
        async with worker(container, kafka):  # restarted: signs with the new key
            # An adapter not yet given the new key refuses its receipts; b waits.
            stale = await deliver(box, kafka, trust=only_old, resend_after=FAST, timeout=10)
            assert stale.pending == {b.message_id}
            assert {r.reason for r in stale.refused} == {UNKNOWN_KEY}
            assert {r.key_id for r in stale.refused} == {new.key_id}
            # Given both keys, it settles b (resent: duplicate) and c, under the new key.
            box.add([(c, "c.json")])
            done = await deliver(box, kafka, trust=both, resend_after=FAST, timeout=30)
        assert done.pending == set()
        assert done.receipts[b.message_id].outcome == "duplicate"
        assert done.receipts[c.message_id].outcome == "indexed"
        assert {r.key_id for r in done.receipts.values()} == {new.key_id}
        assert box.counts() == {PENDING: 0, DELIVERED: 3, REJECTED: 0}
        assert await indexed(container) == 3
    finally:
        box.close()
