"""Ports of ingest: the batch's unit of work (hospitals, keys, repeats, rejections, dead
letters) and the writer that plans and writes a batch of results in it."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.domain.rejections import RejectCode
from broker.domain.results import ParsedMessage
from broker.ingest.envelope import InboundMessage, SigningKey
from broker.ports.unit_of_work import UnitOfWork


class PatientRefused(Exception):
    """The message's patient cannot be indexed as sent; raised before anything of the
    message is planned, so it is rejected alone with `code`."""

    code: RejectCode


class UnknownPatient(PatientRefused):
    """A result names its patient only by a reference this hospital never sent."""

    code = RejectCode.PATIENT_NOT_IDENTIFIED


class IdentityConflict(PatientRefused):
    """Linking the patient's identifiers would give one person two numbers of one national
    system (broker.domain.linking.conflict)."""

    code = RejectCode.PATIENT_IDENTITY_CONFLICT


class Collision(Exception):
    """Another worker indexed the same message, or linked the same person, at the same
    moment (or the two deadlocked): what was written is rolled back; look again, then
    try again (a batch in bulk, a message in its savepoint)."""


@dataclass
class Staged:
    """One message's planned writes."""

    message_id: str
    hospital: str
    counts: dict[str, int] = field(default_factory=dict)  # VersionOutcome -> count


class ResultWriter(abc.ABC):
    """Plans a batch's writes in memory (people linked, versions placed), then writes them."""

    @abc.abstractmethod
    async def prefetch(self, parsed: Sequence[tuple[str, ParsedMessage]]) -> None:
        """Load the people and results the (hospital, message) pairs touch."""

    @abc.abstractmethod
    def stage(
        self,
        message_value: bytes,
        content_type: str | None,
        message_id: str,
        hospital: str,
        parsed: ParsedMessage,
    ) -> Staged:
        """Plan one message; raises PatientRefused before planning anything."""

    @abc.abstractmethod
    def add_inbox(self, row: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def flush(self) -> None:
        """Write everything staged (results, search index, follow-ups); raises Collision
        when another worker wrote the same rows at the same moment (nothing is kept)."""


class IngestUnitOfWork(UnitOfWork):
    """One ingest transaction: a batch in bulk, or a batch message by message."""

    @abc.abstractmethod
    async def time_zones(self) -> Mapping[str, str]:
        """Every registered hospital's IANA time zone, by hospital id."""

    @abc.abstractmethod
    async def signing_keys(self) -> Mapping[tuple[str, str], SigningKey]: ...

    @abc.abstractmethod
    async def indexed(self, message_ids: Iterable[str]) -> set[str]:
        """Those of these message ids already indexed."""

    @abc.abstractmethod
    async def writer(self, now: datetime) -> ResultWriter: ...

    @abc.abstractmethod
    async def record_rejections(
        self, rejected: Sequence[tuple[InboundMessage, dict[str, object]]]
    ) -> None:
        """Store each rejection with its message sealed, replayable as a dead letter."""

    @abc.abstractmethod
    async def settle_dead_letters(self, message_ids: Sequence[str], now: datetime) -> None:
        """Dead letters of these ids are settled: the messages are now indexed."""

    @abc.abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: undone alone on failure; raises Collision on a conflict."""
