"""Index a batch of messages in one unit of work: in bulk, or one savepoint per message.

Storage is behind broker/ports/ingest.py (SQL in broker/storage/ingest_uow.py and
result_writer.py); a database outage arrives as a retriable `Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from broker.domain.errors import retriable
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.rejections import RejectCode, Rejected
from broker.domain.results import ParsedMessage
from broker.domain.versions import VersionOutcome
from broker.ingest.envelope import (
    Envelope,
    InboundMessage,
    SigningKey,
    check_envelope,
    message_id_of,
)
from broker.ingest.parse import ParseLimits, parse_message
from broker.ports.ingest import Collision, IngestUnitOfWork, PatientRefused, ResultWriter
from mrb_wire import headers

logger = logging.getLogger(__name__)

__all__ = ["Admission", "InboundMessage", "IngestService", "Outcome", "Processed"]

# A batch that meets another worker's concurrent writes is tried again in bulk this many
# times in all before it goes message by message (each in a savepoint: far slower).
BULK_ATTEMPTS = 3

HEADER_HOSPITAL = headers.HOSPITAL
HEADER_MESSAGE_ID = headers.MESSAGE_ID
HEADER_CONTENT_TYPE = headers.CONTENT_TYPE
HEADER_KEY_ID = headers.KEY_ID
HEADER_SIGNATURE = headers.SIGNATURE


class Outcome(StrEnum):
    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Processed:
    message: InboundMessage
    outcome: Outcome
    message_id: str | None
    hospital: str | None
    code: RejectCode | None = None
    detail: str | None = None
    results: int = 0
    versions: dict[str, int] = field(default_factory=dict)  # VersionOutcome -> count


@dataclass(frozen=True)
class Admission:
    """What the first step made of a message: a repeat, a copy of one earlier in the batch,
    or a new message with its results parsed (`parsed`)."""

    envelope: Envelope
    parsed: ParsedMessage | None = None
    repeat: bool = False  # already indexed
    copy: bool = False  # its id came earlier in this batch


class IngestService:
    """Parses, pseudonymises, seals and indexes messages; never raises for bad input."""

    def __init__(
        self,
        units: Callable[[], IngestUnitOfWork],
        *,
        limits: ParseLimits,
        require_signatures: bool = True,
        identifiers: IdentifierRegistry | None = None,
    ) -> None:
        self._units = units
        self._require_signatures = require_signatures
        self._limits = limits
        self._identifiers = identifiers

    async def process_batch(self, messages: list[InboundMessage]) -> list[Processed]:
        """Index a batch atomically; a database outage raises (the caller retries).

        The whole batch in bulk first. A conflict with a concurrent worker (the same new
        person linked by both, a deadlock between them) rolls it back and it is tried in
        bulk again at once; after BULK_ATTEMPTS, or on an unexpected error, it is indexed
        message by message, each in a savepoint, so one bad message cannot hold the others
        back.
        """
        for attempt in range(1, BULK_ATTEMPTS + 1):
            try:
                return await self._process_in_bulk(messages)
            except Collision:
                # Another worker wrote the same rows (a new person's identifiers) at the same
                # moment and has committed by now: again in bulk, whose prefetch sees them.
                if attempt < BULK_ATTEMPTS:
                    logger.info("batch met another worker's writes; again in bulk (%d)", attempt)
                    continue
                logger.warning("batch kept meeting other workers' writes; message by message")
            except Exception as exc:
                if retriable(exc):  # unavailable, connection lost, read-only: retried later
                    raise
                logger.warning("bulk indexing failed; retrying message by message", exc_info=True)
            break
        return await self._process_one_by_one(messages)

    async def _process_in_bulk(self, messages: list[InboundMessage]) -> list[Processed]:
        out: list[Processed | None] = []
        plans: list[tuple[int, InboundMessage, str, str, ParsedMessage]] = []
        copies: dict[int, int] = {}  # slot of a repeated message id -> slot of its first
        rejections: list[tuple[InboundMessage, dict[str, object]]] = []
        now = datetime.now(UTC)
        async with self._units() as uow:
            zones = await uow.time_zones()
            keys = await uow.signing_keys()
            indexed = await uow.indexed(_ids(messages))
            first_slot: dict[str, int] = {}
            for message in messages:
                try:
                    admitted = self._admit(message, zones, keys, indexed, first_slot)
                except Rejected as exc:
                    rejections.append((message, _rejection_row(message, *_who(message), exc, now)))
                    out.append(_rejected(message, exc))
                    continue
                hospital, message_id = admitted.envelope.hospital, admitted.envelope.message_id
                if admitted.repeat:
                    out.append(Processed(message, Outcome.DUPLICATE, message_id, hospital))
                    continue
                if admitted.copy:  # a copy in this batch: as its first goes
                    copies[len(out)] = first_slot[message_id]
                    out.append(None)
                    continue
                parsed = admitted.parsed
                assert parsed is not None
                first_slot[message_id] = len(out)
                plans.append((len(out), message, hospital, message_id, parsed))
                out.append(None)
                await asyncio.sleep(0)  # let the API breathe when it shares the loop
            batch = await uow.writer(now)
            await batch.prefetch([(h, p) for _, _, h, _, p in plans])
            for slot, message, hospital, message_id, parsed in plans:
                try:
                    staged = batch.stage(
                        message.value,
                        message.header(HEADER_CONTENT_TYPE),
                        message_id,
                        hospital,
                        parsed,
                    )
                except PatientRefused as exc:
                    refused = Rejected(exc.code, str(exc))
                    rejections.append(
                        (message, _rejection_row(message, hospital, message_id, refused, now))
                    )
                    out[slot] = Processed(
                        message,
                        Outcome.REJECTED,
                        message_id,
                        hospital,
                        refused.code,
                        refused.detail,
                    )
                    continue
                status = _status(parsed, staged.counts)
                batch.add_inbox(_inbox_row(message, hospital, message_id, status, parsed, now))
                out[slot] = Processed(
                    message,
                    status,
                    message_id,
                    hospital,
                    detail=_warned(parsed, hospital, message_id),
                    results=len(parsed.results),
                    versions=staged.counts,
                )
            for slot, first in copies.items():
                original = out[first]
                if original is not None:
                    out[slot] = _copy_outcome(messages[slot], original)
            await batch.flush()
            await uow.record_rejections(rejections)
            await uow.settle_dead_letters(_settled_ids(out), now)
            await uow.commit()
        return [p for p in out if p is not None]

    def _admit(
        self,
        message: InboundMessage,
        zones: Mapping[str, str],
        keys: Mapping[tuple[str, str], SigningKey],
        indexed: Container[str],
        earlier: Container[str] = (),
    ) -> Admission:
        """The first step of every message on both paths: envelope (headers, signature),
        then repeat, then parse; raises Rejected for a message that cannot be indexed."""
        envelope = check_envelope(message, zones, keys, require_signatures=self._require_signatures)
        if envelope.message_id in indexed:
            return Admission(envelope, repeat=True)
        if envelope.message_id in earlier:
            return Admission(envelope, copy=True)
        return Admission(envelope, self._parse(message, envelope.hospital, zones))

    def _parse(
        self, message: InboundMessage, hospital: str, zones: Mapping[str, str]
    ) -> ParsedMessage:
        return parse_message(
            message.value,
            hospital=hospital,
            zone=ZoneInfo(zones[hospital]),
            content_type=message.header(HEADER_CONTENT_TYPE),
            limits=self._limits,
            registry=self._identifiers,
        )

    async def _process_one_by_one(self, messages: list[InboundMessage]) -> list[Processed]:
        out: list[Processed] = []
        async with self._units() as uow:
            zones = await uow.time_zones()
            keys = await uow.signing_keys()
            # Indexed before, or earlier in this batch: either way a repeat here.
            indexed = await uow.indexed(_ids(messages))
            for message in messages:
                out.append(await self._admit_and_index_alone(uow, message, zones, keys, indexed))
                await asyncio.sleep(0)  # let the API breathe when it shares the loop
            await uow.settle_dead_letters(_settled_ids(out), datetime.now(UTC))
            await uow.commit()
        return out

    async def _admit_and_index_alone(
        self,
        uow: IngestUnitOfWork,
        message: InboundMessage,
        zones: Mapping[str, str],
        keys: Mapping[tuple[str, str], SigningKey],
        indexed: set[str],
    ) -> Processed:
        hospital, message_id = _who(message)
        try:
            admitted = self._admit(message, zones, keys, indexed)
            hospital, message_id = admitted.envelope.hospital, admitted.envelope.message_id
            if admitted.repeat:
                return Processed(message, Outcome.DUPLICATE, message_id, hospital)
            parsed = admitted.parsed
            assert parsed is not None
            for attempt in (1, 2):
                try:
                    async with uow.savepoint():
                        processed = await self._index(
                            await uow.writer(datetime.now(UTC)),
                            message,
                            hospital,
                            message_id,
                            parsed,
                        )
                    indexed.add(message_id)
                    return processed
                except Collision:
                    # Another worker indexed this message, or linked the same person, at
                    # the same moment: a repeat if it is indexed now, else retry once.
                    if message_id in await uow.indexed([message_id]):
                        indexed.add(message_id)
                        return Processed(message, Outcome.DUPLICATE, message_id, hospital)
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except PatientRefused as exc:
            return await self._reject(uow, message, hospital, message_id, exc.code, str(exc))
        except Rejected as exc:
            return await self._reject(uow, message, hospital, message_id, exc.code, exc.detail)
        except Exception as exc:
            if retriable(exc):  # never a rejection: the whole batch is retried
                raise
            logger.exception("unexpected failure indexing message %s", message_id)
            return await self._reject(
                uow,
                message,
                hospital,
                message_id,
                RejectCode.PROCESSING_FAILED,
                "the broker could not process this message; it logged the cause",
            )

    async def _index(
        self,
        one: ResultWriter,
        message: InboundMessage,
        hospital: str,
        message_id: str,
        parsed: ParsedMessage,
    ) -> Processed:
        """One message through the same writer the bulk path uses, on its own."""
        now = datetime.now(UTC)
        await one.prefetch([(hospital, parsed)])
        staged = one.stage(
            message.value, message.header(HEADER_CONTENT_TYPE), message_id, hospital, parsed
        )
        status = _status(parsed, staged.counts)
        one.add_inbox(_inbox_row(message, hospital, message_id, status, parsed, now))
        await one.flush()
        return Processed(
            message,
            status,
            message_id,
            hospital,
            detail=_warned(parsed, hospital, message_id),
            results=len(parsed.results),
            versions=staged.counts,
        )

    async def _reject(
        self,
        uow: IngestUnitOfWork,
        message: InboundMessage,
        hospital: str | None,
        message_id: str | None,
        code: RejectCode,
        detail: str,
    ) -> Processed:
        refused = Rejected(code, detail)
        row = _rejection_row(message, hospital, message_id, refused, datetime.now(UTC))
        try:
            async with uow.savepoint():
                await uow.record_rejections([(message, row)])
        except Exception as exc:
            if retriable(exc):
                raise
            # Never expected (the row is sanitised): the message still goes to the Kafka
            # DLQ with its reason and gets its receipt, rather than stalling its partition.
            logger.exception("could not record the rejection of message %s", message_id)
        return Processed(message, Outcome.REJECTED, message_id, hospital, code, detail)


def _settled_ids(processed: Sequence[Processed | None]) -> list[str]:
    """Message ids indexed or answered duplicate: their earlier rejections are settled."""
    return [
        p.message_id
        for p in processed
        if p is not None and p.message_id is not None and p.outcome is not Outcome.REJECTED
    ]


def _rejected(message: InboundMessage, exc: Rejected) -> Processed:
    """A message refused before its envelope was trusted: its headers as they came."""
    hospital, message_id = _who(message)
    return Processed(message, Outcome.REJECTED, message_id, hospital, exc.code, exc.detail)


def _who(message: InboundMessage) -> tuple[str | None, str | None]:
    """(hospital, message id) as the headers say, the id canonical when it is a UUID: what a
    rejection records before or after the envelope was checked."""
    return message.header(HEADER_HOSPITAL), message_id_of(message) or message.header(
        HEADER_MESSAGE_ID
    )


def _copy_outcome(message: InboundMessage, first: Processed) -> Processed:
    """A second copy of a message in one batch: a duplicate if the first was indexed."""
    if first.outcome is Outcome.REJECTED:
        return replace(first, message=message)
    return Processed(message, Outcome.DUPLICATE, first.message_id, first.hospital)


def _warned(parsed: ParsedMessage, hospital: str, message_id: str) -> str | None:
    """What was left out of an indexed message (an unusable image endpoint ...): logged,
    and the receipt's detail, so the hospital learns it. Never a URL or patient data."""
    if not parsed.warnings:
        return None
    for warning in parsed.warnings:
        logger.warning("message %s from %s indexed; %s", message_id, hospital, warning)
    return ("indexed; left out: " + "; ".join(parsed.warnings))[:2000]


def _status(parsed: ParsedMessage, counts: dict[str, int]) -> Outcome:
    duplicates = counts.get(VersionOutcome.DUPLICATE.value, 0)
    if parsed.results and duplicates == len(parsed.results):
        return Outcome.DUPLICATE
    return Outcome.INDEXED


def _inbox_row(
    message: InboundMessage,
    hospital: str,
    message_id: str,
    status: Outcome,
    parsed: ParsedMessage,
    now: datetime,
) -> dict[str, object]:
    return {
        "message_id": message_id,
        "hospital_id": hospital,
        "outcome": status.value,
        "results": len(parsed.results),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "processed_at": now,
    }


def _rejection_row(
    message: InboundMessage,
    hospital: str | None,
    message_id: str | None,
    exc: Rejected,
    now: datetime,
) -> dict[str, object]:
    return {
        "message_id": _storable(message_id or "")[:64] or None,
        "hospital_id": _storable(hospital or "")[:64] or None,
        "code": exc.code.value,
        "detail": _storable(exc.detail),
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "rejected_at": now,
    }


def _storable(text: str) -> str:
    """Text from a message made storable: PostgreSQL text cannot hold NUL characters, and
    a header or detail carrying one must not fail the batch."""
    return text.replace("\x00", "\ufffd")


def _ids(messages: Sequence[InboundMessage]) -> set[str]:
    return {i for i in (message_id_of(m) for m in messages) if i is not None}
