"""The ingest use case (broker/ingest/service.py) on fakes of its ports: which message is
indexed, repeated or rejected with which code, and how a failing batch is retried."""

from __future__ import annotations

import uuid

import pytest

from broker.domain.errors import Unavailable
from broker.domain.rejections import RejectCode
from broker.ingest.envelope import InboundMessage
from broker.ingest.parse import ParseLimits
from broker.ingest.service import BULK_ATTEMPTS, IngestService, Outcome
from tests import factories as f
from tests.fakes import FakeIngestUnitOfWork, FakeResultWriter


def service(uow: FakeIngestUnitOfWork) -> IngestService:
    return IngestService(lambda: uow, limits=ParseLimits())


def lab(accession: str = "ACC-1", hospital: str = "H001", mid: str | None = None) -> InboundMessage:
    return f.inbound(f.lab_bundle(accession=accession), hospital, mid)


def tampered(m: InboundMessage) -> InboundMessage:
    return InboundMessage(m.value.replace(b"13.2", b"31.2"), m.headers)


async def test_a_new_message_is_written_and_committed_in_one_unit_of_work() -> None:
    uow = FakeIngestUnitOfWork()
    (p,) = await service(uow).process_batch([lab()])
    assert p.outcome is Outcome.INDEXED and p.results == 1 and p.hospital == "H001"
    assert uow.commits == 1 and len(uow.written) == 1
    assert uow.inbox == [p.message_id]


async def test_an_indexed_message_is_a_duplicate_and_its_copy_in_a_batch_too() -> None:
    uow = FakeIngestUnitOfWork()
    first = lab()
    await service(uow).process_batch([first])
    again, copy = await service(uow).process_batch([first, first])
    assert again.outcome is copy.outcome is Outcome.DUPLICATE
    fresh = lab("ACC-2")
    one, two = await service(uow).process_batch([fresh, fresh])
    assert (one.outcome, two.outcome) == (Outcome.INDEXED, Outcome.DUPLICATE)
    assert len(uow.written) == 2  # each message written once


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (f.inbound(b"{}", "H999"), RejectCode.UNKNOWN_HOSPITAL),
        (f.inbound(f.lab_bundle(), "H001", signer="H002"), RejectCode.UNKNOWN_KEY),
        (tampered(f.inbound(f.lab_bundle(), "H001")), RejectCode.BAD_SIGNATURE),
        (f.inbound(b"{not json", "H001"), RejectCode.MALFORMED_JSON),
    ],
)
async def test_bad_messages_are_rejected_with_their_code_and_stored_as_dead_letters(
    message: InboundMessage, code: RejectCode
) -> None:
    uow = FakeIngestUnitOfWork()
    good = lab()
    bad_p, good_p = await service(uow).process_batch([message, good])
    assert bad_p.outcome is Outcome.REJECTED and bad_p.code is code
    assert good_p.outcome is Outcome.INDEXED  # one bad message holds nothing back
    assert [row["code"] for _, row in uow.rejections] == [code.value]
    assert uow.settled == [good_p.message_id]


async def test_a_result_whose_patient_is_unknown_is_rejected_alone() -> None:
    uow = FakeIngestUnitOfWork(writer=FakeResultWriter(unknown_patients={"ACC-X"}))
    bad, good = await service(uow).process_batch([lab("ACC-X"), lab("ACC-2")])
    assert bad.code is RejectCode.PATIENT_NOT_IDENTIFIED
    assert good.outcome is Outcome.INDEXED


async def test_a_storage_outage_raises_retriable_and_rejects_nothing() -> None:
    uow = FakeIngestUnitOfWork(fail_flush=Unavailable("Storage unavailable", "down"))
    with pytest.raises(Unavailable) as raised:
        await service(uow).process_batch([lab(), lab("ACC-2")])
    assert raised.value.retriable
    assert uow.rejections == [] and uow.commits == 0


async def test_a_failing_bulk_write_is_retried_message_by_message() -> None:
    # The bulk flush fails for a reason that is not an outage; message by message, only
    # the message whose write fails is rejected (PROCESSING_FAILED), the others indexed.
    uow = FakeIngestUnitOfWork(fail_flush=RuntimeError("bug"), fail_accessions={"ACC-BUG"})
    ok, bug = await service(uow).process_batch([lab("ACC-1"), lab("ACC-BUG")])
    assert ok.outcome is Outcome.INDEXED
    assert bug.outcome is Outcome.REJECTED and bug.code is RejectCode.PROCESSING_FAILED
    assert uow.commits == 1 and uow.savepoints_rolled_back == 1


async def test_a_collision_with_another_worker_becomes_a_duplicate() -> None:
    mid = str(uuid.uuid4())
    uow = FakeIngestUnitOfWork(fail_flush=RuntimeError("conflict"), collide_then_index={mid})
    (p,) = await service(uow).process_batch([lab(mid=mid)])
    assert p.outcome is Outcome.DUPLICATE


async def test_a_batch_meeting_another_workers_writes_is_tried_again_in_bulk() -> None:
    # Two workers linked the same new person at once: the loser's batch is rolled back and
    # tried again in bulk (not message by message, each in a savepoint).
    uow = FakeIngestUnitOfWork(bulk_collisions=BULK_ATTEMPTS - 1)
    got = await service(uow).process_batch([lab("ACC-1"), lab("ACC-2")])
    assert [p.outcome for p in got] == [Outcome.INDEXED, Outcome.INDEXED]
    assert uow.bulk_flushes == BULK_ATTEMPTS
    assert uow.commits == 1 and uow.savepoints_rolled_back == 0
    assert len(uow.inbox) == 2


async def test_a_batch_that_keeps_colliding_goes_message_by_message() -> None:
    uow = FakeIngestUnitOfWork(bulk_collisions=BULK_ATTEMPTS)
    got = await service(uow).process_batch([lab("ACC-1"), lab("ACC-2")])
    assert [p.outcome for p in got] == [Outcome.INDEXED, Outcome.INDEXED]
    assert uow.bulk_flushes == BULK_ATTEMPTS  # then one savepoint per message
    assert uow.commits == 1 and uow.rejections == []


async def test_a_message_deadlocked_alone_is_tried_once_more() -> None:
    # Message by message (after the bulk attempts), one message's savepoint deadlocks
    # with another worker: tried again at once, it is indexed.
    uow = FakeIngestUnitOfWork(bulk_collisions=BULK_ATTEMPTS, deadlocks={"ACC-2": 1})
    got = await service(uow).process_batch([lab("ACC-1"), lab("ACC-2")])
    assert [p.outcome for p in got] == [Outcome.INDEXED, Outcome.INDEXED]
    assert uow.savepoints_rolled_back == 1 and uow.rejections == []


async def test_a_message_that_deadlocks_again_is_a_replayable_dead_letter() -> None:
    # Twice: PROCESSING_FAILED (kept as a dead letter, replayable), the others indexed;
    # never an outage that would pause the batch.
    uow = FakeIngestUnitOfWork(bulk_collisions=BULK_ATTEMPTS, deadlocks={"ACC-2": 2})
    ok, stuck = await service(uow).process_batch([lab("ACC-1"), lab("ACC-2")])
    assert ok.outcome is Outcome.INDEXED
    assert stuck.outcome is Outcome.REJECTED and stuck.code is RejectCode.PROCESSING_FAILED
    assert [row["code"] for _, row in uow.rejections] == ["PROCESSING_FAILED"]
    assert uow.commits == 1 and len(uow.inbox) == 1
