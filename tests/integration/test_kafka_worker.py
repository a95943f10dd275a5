"""The ingest worker against a real Kafka protocol broker (Tansu) and a real database."""

from __future__ import annotations

import asyncio
import base64
import json

import jsonschema
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.exc import OperationalError

from adapters.common.envelope import OutgoingMessage
from adapters.common.publisher import Publisher, Receipt, ReceiptWatcher
from broker.bootstrap import Container
from broker.domain.errors import Unavailable
from broker.ingest.after_commit import open_dlq_value
from broker.ingest.service import InboundMessage, IngestService, Processed
from broker.ingest.worker import IngestWorker
from broker.kafka.reading import read_topic
from broker.kafka.topics import RESULTS, RESULTS_DLQ
from broker.security.receipt_signing import load_receipt_signer
from tests import factories as f
from tests.conftest import REPO, seed_hospitals
from tests.conftest import running_worker as worker

pytestmark = pytest.mark.slow


async def send_and_wait(
    container: Container, kafka: str, messages: list[OutgoingMessage]
) -> dict[str, Receipt]:
    """Publish and collect the receipts, each verified with the broker's receipt key."""
    trust = f.receipt_trust(container.settings.keys_dir)
    async with ReceiptWatcher(kafka, trust=trust) as watcher, Publisher(kafka) as pub:
        await pub.publish(messages)
        got = await watcher.wait_for({m.message_id: m.hospital for m in messages}, timeout=30)
    assert watcher.refused == []
    return got


def out(value: bytes, hospital: str = "H001", key: bytes = b"k1") -> OutgoingMessage:
    return f.outgoing(value, hospital, key)


async def test_results_are_indexed_and_bad_messages_dead_lettered(
    container: Container, kafka: str
) -> None:
    container.settings.max_message_bytes = 64 * 1024
    good = [out(f.lab_bundle(accession=f"A{i}"), key=f"p{i}".encode()) for i in range(5)]
    bad = {
        "MALFORMED_JSON": out(b'{"resourceType": "Bundle",'),
        "NOT_FHIR": out(b'{"hb": 13.2}'),
        "UNSUPPORTED_RESOURCE_TYPE": out(b'{"resourceType": "Medication", "id": "m"}'),
        "UNKNOWN_HOSPITAL": out(f.lab_bundle(), hospital="H999"),
        "MESSAGE_TOO_LARGE": out(b'{"resourceType":"Bundle","x":"' + b"a" * 100_000 + b'"}'),
        "INVALID_ENCODING": out(b'{"resourceType": "Bundle", "x": "\xff"}'),
        "NESTING_TOO_DEEP": out(
            b'{"resourceType":"Bundle","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        ),
        "PATIENT_NOT_IDENTIFIED": out(json.dumps(f.observation("o", "718-7", 1.0)).encode()),
        "UNSUPPORTED_FHIR_VERSION": out(
            json.dumps(
                {
                    "resourceType": "ImagingStudy",
                    "id": "s",
                    "uid": "urn:oid:1.2",
                    "patient": {"reference": "Patient/x"},
                }
            ).encode()
        ),
    }
    async with worker(container, kafka):
        receipts = await send_and_wait(container, kafka, good + list(bad.values()))
    assert all(receipts[m.message_id].outcome == "indexed" for m in good)
    for code, m in bad.items():
        assert receipts[m.message_id].outcome == "rejected"
        assert receipts[m.message_id].error_code == code
    dlq = await read_topic(kafka, RESULTS_DLQ)
    by_id = {dict(r.headers)["mrb-message-id"].decode(): r for r in dlq}
    assert len(by_id) == len(bad)
    for code, m in bad.items():
        record = by_id[m.message_id]
        headers = dict(record.headers)
        assert headers["mrb-error-code"].decode() == code
        assert headers["mrb-error-detail"]
        # Sealed at rest in the DLQ (it may hold patient data); opens to the original bytes.
        assert record.value != m.value
        assert open_dlq_value(record.value, headers, container.cipher) == m.value


async def test_offsets_are_committed_after_the_batch(container: Container, kafka: str) -> None:
    messages = [out(f.lab_bundle(accession=f"C{i}"), key=f"p{i}".encode()) for i in range(12)]
    async with worker(container, kafka):
        receipts = await send_and_wait(container, kafka, messages)
    assert len(receipts) == 12
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka,
        group_id=container.settings.consumer_group,  # mrb-ingest-<installation id>
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(RESULTS, p) for p in consumer.partitions_for_topic(RESULTS) or ()]
        committed = [await consumer.committed(tp) or 0 for tp in tps]
    finally:
        await consumer.stop()
    # Every message consumed is committed (offsets start at 0 on a fresh topic).
    assert sum(committed) == 12


async def test_a_restarted_worker_does_not_reprocess(container: Container, kafka: str) -> None:
    first = [out(f.lab_bundle(accession=f"D{i}"), key=f"p{i}".encode()) for i in range(6)]
    async with worker(container, kafka):
        await send_and_wait(container, kafka, first)
    second = [out(f.lab_bundle(accession=f"E{i}"), key=f"p{i}".encode()) for i in range(6)]
    async with worker(container, kafka):
        receipts = await send_and_wait(container, kafka, second)
    assert {r.outcome for r in receipts.values()} == {"indexed"}
    all_receipts = await read_topic(kafka, "mrb.receipts.v1")
    schema = json.loads((REPO / "schemas" / "messages" / "receipt.v1.schema.json").read_text())
    signer = load_receipt_signer(container.settings.keys_dir, create=False)
    public = signer.private_key.public_key()
    for r in all_receipts:
        jsonschema.validate(json.loads(r.value or b"{}"), schema)
        # Signed by the broker's receipt key over `hospital 0x0A value` (headers).
        headers = dict(r.headers)
        assert headers["mrb-key-id"].decode() == signer.key_id
        signature = base64.b64decode(headers["mrb-signature"], validate=True)
        public.verify(signature, b"H001\n" + (r.value or b""))
    ids = [json.loads(r.value or b"{}")["message_id"] for r in all_receipts]
    assert len(ids) == len(set(ids)) == 12  # nothing from the first run was processed twice


class FlakyDatabase:
    """The real ingest service behind a database that is down for the first batches."""

    def __init__(self, service: IngestService, failures: int) -> None:
        self._service = service
        self.failures = failures

    async def process_batch(self, messages: list[InboundMessage]) -> list[Processed]:
        if self.failures:
            self.failures -= 1
            # As the storage port raises an outage: retriable, the driver's error its cause.
            raise Unavailable("Storage unavailable", "down") from OperationalError(
                "SELECT 1", {}, ConnectionRefusedError("database is down")
            )
        return await self._service.process_batch(messages)


async def test_a_database_outage_rewinds_the_batch_and_loses_nothing(
    container: Container, kafka: str
) -> None:
    flaky = FlakyDatabase(container.ingest_service(), failures=2)
    worker_ = IngestWorker(
        flaky,  # type: ignore[arg-type]
        cipher=container.cipher,
        receipt_signer=load_receipt_signer(container.settings.keys_dir, create=True),
        bootstrap=kafka,
        group_id="g-outage",
        retry_seconds=0.1,
        session_timeout_ms=2000,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker_.run(stop))
    try:
        messages = [out(f.lab_bundle(accession=f"F{i}"), key=f"p{i}".encode()) for i in range(4)]
        receipts = await send_and_wait(container, kafka, messages)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert flaky.failures == 0
    assert {r.outcome for r in receipts.values()} == {"indexed"}
    assert len(receipts) == 4


async def test_dlq_replay_after_the_fix_indexes_the_message(
    container: Container, kafka: str
) -> None:
    from typer.testing import CliRunner

    from broker.cli.main import app
    from broker.storage import hospitals

    stray = f.outgoing(f.lab_bundle(accession="LATE"), hospital="H003")
    async with worker(container, kafka):
        (first,) = (await send_and_wait(container, kafka, [stray])).values()
        assert first.error_code == "UNKNOWN_HOSPITAL"
        await seed_hospitals(container, hospitals.Hospital("H003", "Third", "510503", "2"))
        env = {
            "MRB_KAFKA_BOOTSTRAP": kafka,
            "MRB_DATA_DIR": str(container.settings.data_dir),
            "MRB_DATABASE_URL": container.settings.database_url or "",
            "MRB_DATABASE_SCHEMA": container.settings.database_schema or "",
        }
        trust = f.receipt_trust(container.settings.keys_dir)
        async with ReceiptWatcher(kafka, trust=trust) as watcher:
            result = await asyncio.to_thread(
                CliRunner().invoke, app, ["dlq", "replay", "--code", "UNKNOWN_HOSPITAL"], env=env
            )
            assert result.exit_code == 0, result.output
            assert "replayed 1 message(s)" in result.output
            got = await watcher.wait_for({stray.message_id: "H003"}, timeout=30)
    assert got[stray.message_id].outcome == "indexed"
