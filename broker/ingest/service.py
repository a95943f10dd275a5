"""Index a batch of messages in one database transaction (one savepoint per message)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.identifiers import DEFAULT_SYSTEM_ALIASES
from broker.domain.rejections import RejectCode, Rejected
from broker.domain.results import ParsedMessage
from broker.domain.versions import VersionOutcome
from broker.ingest.batch import BatchIndexer, CatalogSource, ChangeListener, UnknownPatient
from broker.ingest.envelope import Envelope, InboundMessage, check_envelope, message_id_of
from broker.ingest.parse import ParseLimits, parse_message
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import dead_letters
from broker.storage import hospitals as hospital_registry
from broker.storage.outage import is_outage
from broker.storage.tables import inbox, rejection
from mrb_wire import headers

logger = logging.getLogger(__name__)

__all__ = ["Admission", "InboundMessage", "IngestService", "Outcome", "Processed"]

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
        sessions: async_sessionmaker[AsyncSession],
        *,
        pseudonyms: Pseudonymiser,
        cipher: PayloadCipher,
        limits: ParseLimits,
        default_zone: str,
        require_signatures: bool = True,
        on_change: ChangeListener | None = None,
        catalog_source: CatalogSource | None = None,
    ) -> None:
        self._sessions = sessions
        self._on_change = on_change
        self._catalog_source = catalog_source
        self._require_signatures = require_signatures

        self._pseudonyms = pseudonyms
        self._cipher = cipher
        self._limits = limits
        self._default_zone = default_zone

    async def process_batch(self, messages: list[InboundMessage]) -> list[Processed]:
        """Index a batch atomically; a database outage raises (the caller retries).

        The whole batch in bulk first; if that fails (a conflict with a concurrent
        worker, an unexpected error), it is rolled back and indexed message by message,
        each in a savepoint, so one bad message cannot hold the others back.
        """
        try:
            return await self._process_in_bulk(messages)
        except Exception as exc:
            if is_outage(exc):  # unavailable, connection lost, read-only: retried later
                raise
            logger.warning("bulk indexing failed; retrying message by message", exc_info=True)
        return await self._process_one_by_one(messages)

    async def _process_in_bulk(self, messages: list[InboundMessage]) -> list[Processed]:
        out: list[Processed | None] = []
        plans: list[tuple[int, InboundMessage, str, str, ParsedMessage]] = []
        copies: dict[int, int] = {}  # slot of a repeated message id -> slot of its first
        rejections: list[dict[str, object]] = []
        now = datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            registry = {h.id: h for h in await hospital_registry.list_all(session)}
            keys = await hospital_registry.signing_keys(session)
            indexed = await _indexed_ids(session, messages)
            first_slot: dict[str, int] = {}
            for message in messages:
                try:
                    admitted = self._admit(message, registry, keys, indexed, first_slot)
                except Rejected as exc:
                    rejections.append(self._rejection_row(message, *_who(message), exc, now))
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
            batch = await self._indexer(session, now)
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
                except UnknownPatient as exc:
                    refused = Rejected(RejectCode.PATIENT_NOT_IDENTIFIED, str(exc))
                    rejections.append(
                        self._rejection_row(message, hospital, message_id, refused, now)
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
                    results=len(parsed.results),
                    versions=staged.counts,
                )
            for slot, first in copies.items():
                original = out[first]
                if original is not None:
                    out[slot] = _copy_outcome(messages[slot], original)
            await batch.flush()
            if rejections:
                await session.execute(rejection.insert(), rejections)
            await dead_letters.resolve(session, _settled_ids(out), now)
        return [p for p in out if p is not None]

    def _admit(
        self,
        message: InboundMessage,
        registry: Mapping[str, hospital_registry.Hospital],
        keys: Mapping[tuple[str, str], hospital_registry.SigningKey],
        indexed: Container[str],
        earlier: Container[str] = (),
    ) -> Admission:
        """The first step of every message on both paths: envelope (headers, signature),
        then repeat, then parse; raises Rejected for a message that cannot be indexed."""
        envelope = check_envelope(
            message, registry, keys, require_signatures=self._require_signatures
        )
        if envelope.message_id in indexed:
            return Admission(envelope, repeat=True)
        if envelope.message_id in earlier:
            return Admission(envelope, copy=True)
        return Admission(envelope, self._parse(message, envelope.hospital, registry))

    async def _indexer(self, session: AsyncSession, now: datetime) -> BatchIndexer:
        """The indexer both paths use, with the catalog's current local-code mappings."""
        catalog = await self._catalog_source(session) if self._catalog_source else None
        return BatchIndexer(session, self._pseudonyms, self._cipher, now, self._on_change, catalog)

    def _parse(
        self,
        message: InboundMessage,
        hospital: str,
        registry: Mapping[str, hospital_registry.Hospital],
    ) -> ParsedMessage:
        return parse_message(
            message.value,
            hospital=hospital,
            zone=ZoneInfo(registry[hospital].timezone or self._default_zone),
            content_type=message.header(HEADER_CONTENT_TYPE),
            limits=self._limits,
            aliases=DEFAULT_SYSTEM_ALIASES,
        )

    async def _process_one_by_one(self, messages: list[InboundMessage]) -> list[Processed]:
        out: list[Processed] = []
        async with self._sessions() as session, session.begin():
            registry = {h.id: h for h in await hospital_registry.list_all(session)}
            keys = await hospital_registry.signing_keys(session)
            # Indexed before, or earlier in this batch: either way a repeat here.
            indexed = await _indexed_ids(session, messages)
            for message in messages:
                out.append(await self._one(session, message, registry, keys, indexed))
                await asyncio.sleep(0)  # let the API breathe when it shares the loop
            await dead_letters.resolve(session, _settled_ids(out), datetime.now(UTC))
        return out

    def _rejection_row(
        self,
        message: InboundMessage,
        hospital: str | None,
        message_id: str | None,
        exc: Rejected,
        now: datetime,
    ) -> dict[str, object]:
        """The rejection as a dead letter: replayable from here beyond Kafka retention."""
        row = _rejection_row(message, hospital, message_id, exc, now)
        row.update(
            dead_letters.sealed_columns(self._cipher, message.value, message.headers, message.key)
        )
        return row

    async def _one(
        self,
        session: AsyncSession,
        message: InboundMessage,
        registry: dict[str, hospital_registry.Hospital],
        keys: Mapping[tuple[str, str], hospital_registry.SigningKey],
        indexed: set[str],
    ) -> Processed:
        hospital, message_id = _who(message)
        try:
            admitted = self._admit(message, registry, keys, indexed)
            hospital, message_id = admitted.envelope.hospital, admitted.envelope.message_id
            if admitted.repeat:
                return Processed(message, Outcome.DUPLICATE, message_id, hospital)
            parsed = admitted.parsed
            assert parsed is not None
            for attempt in (1, 2):
                try:
                    async with session.begin_nested():
                        processed = await self._index(
                            session, message, hospital, message_id, parsed
                        )
                    indexed.add(message_id)
                    return processed
                except IntegrityError:
                    # Another worker indexed this message, or linked the same person, at
                    # the same moment: a repeat if it is indexed now, else retry once.
                    if await _already_indexed(session, message_id):
                        indexed.add(message_id)
                        return Processed(message, Outcome.DUPLICATE, message_id, hospital)
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        except UnknownPatient as exc:
            return await self._reject(
                session,
                message,
                hospital,
                message_id,
                RejectCode.PATIENT_NOT_IDENTIFIED,
                str(exc),
            )
        except Rejected as exc:
            return await self._reject(session, message, hospital, message_id, exc.code, exc.detail)
        except Exception as exc:
            if is_outage(exc):  # never a rejection: the whole batch is retried
                raise
            logger.exception("unexpected failure indexing message %s", message_id)
            return await self._reject(
                session,
                message,
                hospital,
                message_id,
                RejectCode.PROCESSING_FAILED,
                "the broker could not process this message; it logged the cause",
            )

    async def _index(
        self,
        session: AsyncSession,
        message: InboundMessage,
        hospital: str,
        message_id: str,
        parsed: ParsedMessage,
    ) -> Processed:
        """One message through the same indexer the bulk path uses, on its own."""
        now = datetime.now(UTC)
        one = await self._indexer(session, now)
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
            results=len(parsed.results),
            versions=staged.counts,
        )

    async def _reject(
        self,
        session: AsyncSession,
        message: InboundMessage,
        hospital: str | None,
        message_id: str | None,
        code: RejectCode,
        detail: str,
    ) -> Processed:
        refused = Rejected(code, detail)
        row = self._rejection_row(message, hospital, message_id, refused, datetime.now(UTC))
        try:
            async with session.begin_nested():
                await session.execute(rejection.insert(), row)
        except Exception as exc:
            if is_outage(exc):
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


async def _indexed_ids(session: AsyncSession, messages: list[InboundMessage]) -> set[str]:
    """Message ids of the batch that are already indexed (one query)."""
    ids = {i for i in (message_id_of(m) for m in messages) if i is not None}
    if not ids:
        return set()
    rows = await session.execute(select(inbox.c.message_id).where(inbox.c.message_id.in_(ids)))
    return {r[0] for r in rows}


async def _already_indexed(session: AsyncSession, message_id: str) -> bool:
    row = await session.execute(select(inbox.c.message_id).where(inbox.c.message_id == message_id))
    return row.first() is not None
