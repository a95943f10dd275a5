"""A doctor's outcome for each item of a check: accepted (a saving) or declined (a reason).

One transaction writes the outcome, the ledger entry and the event. Retries are
idempotent: the same outcome again returns what was recorded; a different one is a
conflict. Only doctors of the ordering hospital may record outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.domain.catalog import Catalog
from broker.domain.check_items import StoredCheckItem, saving_key, stored_items
from broker.domain.errors import Conflict, Invalid, NotAllowed, NotFound
from broker.domain.ledger import (
    OutcomeInput,
    OutcomeKind,
    OutcomeRefused,
    month_of,
    to_yuan,
    validate_outcome,
)
from broker.domain.results import WITHDRAWN_STATUSES
from broker.storage import events, ledger
from broker.storage.tables import recognition_check, recognition_outcome, result


@dataclass(frozen=True)
class OutcomeRequest:
    index: int  # position of the item in the check's answer
    given: OutcomeInput


@dataclass(frozen=True)
class RecordedOutcome:
    index: int
    catalog_code: str | None
    outcome: OutcomeKind
    reason: str | None
    reason_text: str | None
    saved: Decimal | None  # yuan booked for an accepted item
    recorded_by: str
    recorded_at: datetime
    replayed: bool  # True when this call found it already recorded


async def record_outcomes(
    sessions: async_sessionmaker[AsyncSession],
    catalog: Catalog,
    check_id: str,
    requests: Sequence[OutcomeRequest],
    actor: Actor,
    *,
    channel: str = "api",
    now: datetime | None = None,
) -> list[RecordedOutcome]:
    if not requests:
        raise Invalid("No outcomes", "send at least one item outcome")
    indexes = [r.index for r in requests]
    if len(set(indexes)) != len(indexes):
        raise Invalid("Repeated item", "each item index may appear once")
    for attempt in (1, 2, 3):
        try:
            return await _record(sessions, catalog, check_id, requests, actor, channel, now)
        except IntegrityError:
            # A concurrent retry recorded the same item first: read what it wrote.
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


async def _record(
    sessions: async_sessionmaker[AsyncSession],
    catalog: Catalog,
    check_id: str,
    requests: Sequence[OutcomeRequest],
    actor: Actor,
    channel: str,
    now: datetime | None,
) -> list[RecordedOutcome]:
    now = now or datetime.now(UTC)
    async with sessions() as s, s.begin():
        check = (
            await s.execute(select(recognition_check).where(recognition_check.c.id == check_id))
        ).first()
        if check is None:
            raise NotFound("Unknown check", f"no recognition check {check_id!r}")
        if actor.hospital != check.ordering_hospital:
            raise NotAllowed(
                "Not the ordering hospital",
                f"only doctors of {check.ordering_hospital}, which ordered, may record outcomes",
            )
        items = stored_items(check.items)
        wanted: list[tuple[OutcomeRequest, OutcomeInput, StoredCheckItem]] = []
        for r in requests:
            if not 0 <= r.index < len(items):
                raise Invalid(
                    "No such item", f"the check has items 0..{len(items) - 1}, not {r.index}"
                )
            item = items[r.index]
            try:
                wanted.append((r, validate_outcome(item.decision, r.given), item))
            except OutcomeRefused as exc:
                raise Invalid("Outcome refused", f"item {r.index}: {exc}") from None
        recorded = await _existing(s, check_id)
        out: list[RecordedOutcome] = []
        fresh: list[tuple[OutcomeRequest, OutcomeInput, StoredCheckItem]] = []
        for r, v, item in wanted:
            prior = recorded.get(r.index)
            if prior is None:
                fresh.append((r, v, item))
            elif (prior.outcome, prior.reason, prior.reason_text) == (
                v.outcome.value,
                v.reason.value if v.reason else None,
                v.reason_text,
            ):
                out.append(_as_recorded(prior, item, replayed=True))
            else:
                raise Conflict(
                    "Outcome already recorded",
                    f"item {r.index} was recorded as {prior.outcome} by {prior.recorded_by} "
                    f"at {prior.recorded_at.isoformat()}; outcomes are not changed afterwards",
                )
        accepted = [(r, v, item) for r, v, item in fresh if v.outcome is OutcomeKind.ACCEPTED]
        for r, _, item in accepted:
            await _still_as_checked(s, r.index, item)
        period = await ledger.booking_period(s, now) if accepted else None
        for r, v, item in fresh:
            code = item.catalog_code
            cat = catalog.items.get(code) if code else None
            await s.execute(
                recognition_outcome.insert().values(
                    check_id=check_id,
                    item_index=r.index,
                    outcome=v.outcome.value,
                    reason=v.reason.value if v.reason else None,
                    reason_text=v.reason_text,
                    catalog_code=code,
                    category=cat.category if cat else None,
                    period=month_of(now),
                    result_id=item.candidate,
                    hospital_id=check.ordering_hospital,
                    recorded_by=actor.name,
                    channel=channel,
                    recorded_at=now,
                )
            )
            body: dict[str, Any] = {
                "check_id": check_id,
                "item_index": r.index,
                "ordering_hospital": check.ordering_hospital,
                "source_hospital": item.candidate_hospital,
                "catalog_code": code,
                "category": cat.category if cat else None,
                "result_id": item.candidate,
                "recorded_by": actor.name,
                "channel": channel,
            }
            saved: Decimal | None = None
            if v.outcome is OutcomeKind.ACCEPTED:
                assert period is not None
                saved = to_yuan(item.saving)
                entry_id = await ledger.add_entry(
                    s,
                    dedupe_key=saving_key(check_id, r.index),
                    kind="saving",
                    period=period,
                    amount_fen=int(saved * 100),
                    ordering_hospital=check.ordering_hospital,
                    source_hospital=item.candidate_hospital,
                    catalog_code=code,
                    category=cat.category if cat else None,
                    check_id=check_id,
                    item_index=r.index,
                    result_id=item.candidate,
                    recorded_by=actor.name,
                    occurred_at=now,
                    recorded_at=now,
                )
                body |= {"amount": f"{saved:.2f}", "period": period, "entry_id": entry_id}
            else:
                body |= {"reason": v.reason.value if v.reason else None}
            await events.append(s, v.outcome.value, check.ordering_hospital, body, now)
            out.append(
                RecordedOutcome(
                    r.index,
                    code,
                    v.outcome,
                    v.reason.value if v.reason else None,
                    v.reason_text,
                    saved,
                    actor.name,
                    now,
                    replayed=False,
                )
            )
    return sorted(out, key=lambda o: o.index)


async def _existing(s: AsyncSession, check_id: str) -> dict[int, Row[Any]]:
    rows = await s.execute(
        select(recognition_outcome).where(recognition_outcome.c.check_id == check_id)
    )
    return {row.item_index: row for row in rows}


def _as_recorded(row: Row[Any], item: StoredCheckItem, *, replayed: bool) -> RecordedOutcome:
    accepted = row.outcome == OutcomeKind.ACCEPTED.value
    return RecordedOutcome(
        row.item_index,
        row.catalog_code,
        OutcomeKind(row.outcome),
        row.reason,
        row.reason_text,
        to_yuan(item.saving) if accepted else None,
        row.recorded_by,
        row.recorded_at,
        replayed=replayed,
    )


async def _still_as_checked(s: AsyncSession, index: int, item: StoredCheckItem) -> None:
    """Refuse to accept a result that changed after the check answered.

    The row lock orders this against ingest (which updates the row when a new version
    arrives), so a withdrawal either is seen here or sees this acceptance.
    """
    query = select(result.c.status, result.c.updated_at).where(result.c.id == item.candidate)
    if s.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await s.execute(query)).first()
    if (
        row is None
        or row.updated_at.isoformat() != item.candidate_version
        or row.status in WITHDRAWN_STATUSES
    ):
        status = row.status if row is not None else "gone"
        raise Conflict(
            "Result changed since the check",
            f"item {index}: the prior result changed after the check (now {status}); "
            "run the check again before recognising it",
        )
