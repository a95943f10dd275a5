"""Outcomes, safety notices and notices on SQLAlchemy (ports in broker/ports/outcomes.py).

Recording outcomes and reading notices each own one session and transaction; the safety
notifier's unit of work is bound to the ingest batch's session (`safety_listener`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.check_items import stored_items
from broker.domain.recognition import Text
from broker.domain.results import ResultChange
from broker.ports import outcomes as ports  # this use case's ports
from broker.security.payload_cipher import ALGORITHM, PayloadCipher, Sealed
from broker.storage import ledger
from broker.storage.check_uow import SqlAudit, SqlEvents
from broker.storage.tables import (
    ledger_entry,
    notification,
    recognition_check,
    recognition_outcome,
    result,
)
from broker.storage.unit_of_work import SealingUnitOfWork, SqlUnitOfWork
from broker.storage.write_batch import Writes


@contextmanager
def _first_writer() -> Iterator[None]:
    """A unique key stored by a concurrent transaction: the port's AlreadyWritten."""
    try:
        yield
    except IntegrityError as exc:
        raise ports.AlreadyWritten(type(exc.orig).__name__) from exc


class SqlRecordedChecks(ports.RecordedChecks):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, check_id: str) -> ports.CheckedItems | None:
        row = (
            await self._session.execute(
                select(
                    recognition_check.c.id,
                    recognition_check.c.ordering_hospital,
                    recognition_check.c["items"],
                ).where(recognition_check.c.id == check_id)
            )
        ).first()
        if row is None:
            return None
        return ports.CheckedItems(row.id, row.ordering_hospital, tuple(stored_items(row.items)))


_OUTCOME_COLUMNS = tuple(ports.Outcome.__dataclass_fields__)


def _outcome(row: Row[Any]) -> ports.Outcome:
    return ports.Outcome(**{k: getattr(row, k) for k in _OUTCOME_COLUMNS})


class SqlOutcomes(ports.Outcomes):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def of_check(self, check_id: str) -> dict[int, ports.Outcome]:
        rows = await self._session.execute(
            select(recognition_outcome).where(recognition_outcome.c.check_id == check_id)
        )
        return {row.item_index: _outcome(row) for row in rows}

    async def add(self, outcome: ports.Outcome) -> None:
        values = {k: getattr(outcome, k) for k in _OUTCOME_COLUMNS}
        with _first_writer():
            await self._session.execute(recognition_outcome.insert().values(**values))

    async def accepted_for(self, result_ids: Sequence[str]) -> list[ports.Outcome]:
        if not result_ids:
            return []
        rows = await self._session.execute(
            select(recognition_outcome)
            .where(
                recognition_outcome.c.outcome == "accepted",
                recognition_outcome.c.result_id.in_(list(result_ids)),
            )
            .order_by(recognition_outcome.c.id)
        )
        return [_outcome(row) for row in rows]


class SqlCandidateResults(ports.CandidateResults):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_current(self, result_id: str) -> ports.ResultState | None:
        query = select(result.c.status, result.c.updated_at).where(result.c.id == result_id)
        if self._session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()  # ingest updates this row for a new version
        row = (await self._session.execute(query)).first()
        return ports.ResultState(row.status, row.updated_at.isoformat()) if row else None


_ENTRY_COLUMNS = tuple(k for k in ports.LedgerEntry.__dataclass_fields__ if k != "entry_id")


class SqlLedger(ports.Ledger):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def booking_period(self, moment: datetime) -> str:
        return await ledger.booking_period(self._session, moment)

    async def add(self, entry: ports.LedgerEntry) -> str:
        with _first_writer():
            return await ledger.add_entry(
                self._session, **{k: getattr(entry, k) for k in _ENTRY_COLUMNS}
            )

    async def find(self, dedupe_key: str) -> ports.LedgerEntry | None:
        row = (
            await self._session.execute(
                select(ledger_entry).where(ledger_entry.c.dedupe_key == dedupe_key)
            )
        ).first()
        if row is None:
            return None
        return ports.LedgerEntry(
            **{k: getattr(row, k) for k in _ENTRY_COLUMNS}, entry_id=row.entry_id
        )


class SqlNotices(ports.Notices):
    def __init__(self, session: AsyncSession, cipher: PayloadCipher | None = None) -> None:
        self._session = session
        self._cipher = cipher  # to unseal the patient for the recipient; not needed to add

    async def exists(self, dedupe_key: str) -> bool:
        found = await self._session.scalar(
            select(notification.c.id).where(notification.c.dedupe_key == dedupe_key)
        )
        return found is not None

    async def add(self, notice: ports.Notice) -> None:
        values = {k: getattr(notice, k) for k in ports.Notice.__dataclass_fields__}
        values["message"] = {"zh": notice.message.zh, "en": notice.message.en}
        await self._session.execute(notification.insert().values(**values))

    async def for_recipient(
        self, hospital: str, recipient: str, *, unread_only: bool, limit: int
    ) -> list[ports.NoticeView]:
        query = (
            select(
                notification,
                recognition_check.c.order_time,
                recognition_check.c["items"],
                recognition_check.c.person_id,
                recognition_check.c.patient_sealed,
                recognition_check.c.patient_nonce,
                recognition_check.c.patient_key_id,
                result.c.resource_type,
            )
            .join(recognition_check, recognition_check.c.id == notification.c.check_id)
            .join(result, result.c.id == notification.c.result_id)
            .where(notification.c.hospital_id == hospital, notification.c.recipient == recipient)
            .order_by(notification.c.id.desc())
            .limit(limit)
        )
        if unread_only:
            query = query.where(notification.c.read_at.is_(None))
        return [self._view(r) for r in await self._session.execute(query)]

    def _view(self, r: Row[Any]) -> ports.NoticeView:
        notice = ports.Notice(
            **{
                k: getattr(r, k)
                for k in ports.Notice.__dataclass_fields__
                if k != "message"  # stored as {"zh", "en"}
            },
            message=Text(r.message["zh"], r.message["en"]),
        )
        check = ports.NoticedCheck(
            r.order_time, r.person_id, self._patient(r), tuple(stored_items(r.items))
        )
        return ports.NoticeView(notice, r.read_at, check, r.resource_type)

    def _patient(self, r: Row[Any]) -> dict[str, str] | None:
        if r.patient_sealed is None:
            return None
        assert self._cipher is not None, "notices read without the payload cipher"
        sealed = Sealed(r.patient_key_id, ALGORITHM, r.patient_nonce, r.patient_sealed)
        opened: dict[str, str] = json.loads(
            self._cipher.open(sealed, associated=r.check_id.encode())
        )
        return opened

    async def mark_read(self, notice_id: str, hospital: str, recipient: str, now: datetime) -> bool:
        done = await self._session.execute(
            update(notification)
            .where(
                notification.c.notice_id == notice_id,
                notification.c.hospital_id == hospital,
                notification.c.recipient == recipient,
            )
            .values(read_at=func.coalesce(notification.c.read_at, now))
        )
        return bool(done.rowcount)  # type: ignore[attr-defined]


class SqlOutcomeUnitOfWork(SqlUnitOfWork, ports.OutcomeUnitOfWork):
    async def commit(self) -> None:
        with _first_writer():
            await super().commit()

    def _bind(self, session: AsyncSession) -> None:
        self.checks = SqlRecordedChecks(session)
        self.outcomes = SqlOutcomes(session)
        self.results = SqlCandidateResults(session)
        self.ledger = SqlLedger(session)
        self.events = SqlEvents(Writes(session))


class SqlNoticeUnitOfWork(SealingUnitOfWork, ports.NoticeUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.notices = SqlNotices(session, self._cipher)
        self.audit = SqlAudit(Writes(session), self._pseudonyms)


class SqlSafetyUnitOfWork(ports.SafetyUnitOfWork):
    """Bound to the ingest batch's session: its transaction is ingest's."""

    def __init__(self, session: AsyncSession) -> None:
        self.outcomes = SqlOutcomes(session)
        self.ledger = SqlLedger(session)
        self.notices = SqlNotices(session)
        self.events = SqlEvents(Writes(session))


SafetyHandler = Callable[[ports.SafetyUnitOfWork, list[ResultChange], datetime], Awaitable[None]]
ChangeListener = Callable[[AsyncSession, list[ResultChange], datetime], Awaitable[None]]


def safety_listener(handler: SafetyHandler) -> ChangeListener:
    """What ingest calls with its session when results get a new current version."""

    async def on_change(session: AsyncSession, changes: list[ResultChange], now: datetime) -> None:
        await handler(SqlSafetyUnitOfWork(session), changes, now)

    return on_change
