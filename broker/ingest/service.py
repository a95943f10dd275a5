"""Index a batch of messages in one database transaction (one savepoint per message)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
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
from broker.ingest.parse import ParseLimits, parse_message
from broker.security import signatures
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import dead_letters
from broker.storage import hospitals as hospital_registry
from broker.storage.outage import is_outage
from broker.storage.tables import inbox, rejection
from mrb_wire import headers

logger = logging.getLogger(__name__)

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
class InboundMessage:
    value: bytes
    headers: dict[str, bytes]
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            return None


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
                hospital = message.header(HEADER_HOSPITAL)
                message_id = message.header(HEADER_MESSAGE_ID)
                try:
                    hospital, message_id = _check_headers(hospital, message_id, registry)
                    self._check_signature(message, hospital, message_id, keys)
                    if message_id in indexed:
                        out.append(Processed(message, Outcome.DUPLICATE, message_id, hospital))
                        continue
                    if message_id in first_slot:  # a copy in this batch: as its first goes
                        copies[len(out)] = first_slot[message_id]
                        out.append(None)
                        continue
                    parsed = self._parse(message, hospital, registry)
                except Rejected as exc:
                    rejections.append(self._rejection_row(message, hospital, message_id, exc, now))
                    out.append(
                        Processed(
                            message, Outcome.REJECTED, message_id, hospital, exc.code, exc.detail
                        )
                    )
                    continue
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
        for p in out:
            if p is not None and p.outcome is Outcome.REJECTED:
                logger.info(
                    "rejected message %s from %s: %s",
                    p.message_id,
                    p.hospital,
                    p.code.value if p.code else "-",
                )
        return [p for p in out if p is not None]

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
            seen_in_batch: set[str] = set()
            for message in messages:
                out.append(await self._one(session, message, registry, keys, seen_in_batch))
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
        seen_in_batch: set[str],
    ) -> Processed:
        hospital = message.header(HEADER_HOSPITAL)
        message_id = message.header(HEADER_MESSAGE_ID)
        try:
            hospital, message_id = _check_headers(hospital, message_id, registry)
            self._check_signature(message, hospital, message_id, keys)
            if message_id in seen_in_batch or await _already_indexed(session, message_id):
                return Processed(message, Outcome.DUPLICATE, message_id, hospital)
            parsed = self._parse(message, hospital, registry)
            for attempt in (1, 2):
                try:
                    async with session.begin_nested():
                        processed = await self._index(
                            session, message, hospital, message_id, parsed
                        )
                    seen_in_batch.add(message_id)
                    return processed
                except IntegrityError:
                    # Another worker linked the same person at the same moment: retry once.
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

    def _check_signature(
        self,
        message: InboundMessage,
        hospital: str,
        message_id: str,
        keys: Mapping[tuple[str, str], hospital_registry.SigningKey],
    ) -> None:
        """Verify before anything else reads the value (DESIGN.md)."""
        key_id = message.header(HEADER_KEY_ID)
        signature = message.header(HEADER_SIGNATURE)
        if not self._require_signatures and not key_id and not signature:
            return
        if not key_id:
            raise Rejected(RejectCode.UNKNOWN_KEY, f"header {HEADER_KEY_ID} is missing")
        key = keys.get((hospital, key_id))
        if key is None:
            raise Rejected(
                RejectCode.UNKNOWN_KEY,
                f"key {key_id[:64]!r} is not registered for {hospital}; register it with "
                "`mrb hospital key add`",
            )
        if key.revoked_at is not None:
            raise Rejected(
                RejectCode.REVOKED_KEY,
                f"key {key_id} of {hospital} was revoked on {key.revoked_at:%Y-%m-%d}",
            )
        data = signatures.signed_bytes(hospital, message_id, message.value)
        if not signature or not signatures.verify(
            signatures.public_key(key.public_key), signature, data
        ):
            raise Rejected(
                RejectCode.BAD_SIGNATURE,
                f"mrb-signature does not match the message signed by {hospital} with {key_id}",
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
        logger.info("rejected message %s from %s: %s", message_id, hospital, code.value)
        return Processed(message, Outcome.REJECTED, message_id, hospital, code, detail)


def _settled_ids(processed: Sequence[Processed | None]) -> list[str]:
    """Message ids indexed or answered duplicate: their earlier rejections are settled."""
    return [
        p.message_id
        for p in processed
        if p is not None and p.message_id is not None and p.outcome is not Outcome.REJECTED
    ]


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
    ids = set()
    for m in messages:
        raw = m.header(HEADER_MESSAGE_ID)
        try:
            ids.add(str(uuid.UUID(raw or "")))
        except ValueError:
            continue
    if not ids:
        return set()
    rows = await session.execute(select(inbox.c.message_id).where(inbox.c.message_id.in_(ids)))
    return {r[0] for r in rows}


def _check_headers(
    hospital: str | None, message_id: str | None, registry: Mapping[str, object]
) -> tuple[str, str]:
    """The hospital and canonical message id, or Rejected naming the broken header."""
    if not hospital:
        raise Rejected(RejectCode.MISSING_HEADER, f"header {HEADER_HOSPITAL} is missing")
    if not message_id:
        raise Rejected(RejectCode.MISSING_HEADER, f"header {HEADER_MESSAGE_ID} is missing")
    try:
        canonical = str(uuid.UUID(message_id))
    except ValueError:
        raise Rejected(
            RejectCode.INVALID_MESSAGE_ID, f"{HEADER_MESSAGE_ID} {message_id[:64]!r} is not a UUID"
        ) from None
    if hospital not in registry:
        raise Rejected(
            RejectCode.UNKNOWN_HOSPITAL,
            f"hospital {hospital[:64]!r} is not registered; register it with `mrb hospital add`",
        )
    return hospital, canonical


async def _already_indexed(session: AsyncSession, message_id: str) -> bool:
    row = await session.execute(select(inbox.c.message_id).where(inbox.c.message_id == message_id))
    return row.first() is not None
