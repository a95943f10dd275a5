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

from broker import ports
from broker.domain.actors import Actor
from broker.domain.catalog import Catalog
from broker.domain.check_items import StoredCheckItem, saving_key
from broker.domain.errors import Conflict, Invalid, NotAllowed, NotFound
from broker.domain.ledger import (
    OutcomeInput,
    OutcomeKind,
    OutcomeRefused,
    month_of,
    split_fee,
    to_yuan,
    validate_outcome,
)
from broker.domain.results import WITHDRAWN_STATUSES


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
    uow: ports.OutcomeUnitOfWork,
    catalog: Catalog,
    check_id: str,
    requests: Sequence[OutcomeRequest],
    actor: Actor,
    *,
    channel: str = "api",
    now: datetime | None = None,
) -> list[RecordedOutcome]:
    """Record each item's outcome, its saving and its event in one unit of work."""
    if not requests:
        raise Invalid("No outcomes", "send at least one item outcome")
    indexes = [r.index for r in requests]
    if len(set(indexes)) != len(indexes):
        raise Invalid("Repeated item", "each item index may appear once")
    for attempt in (1, 2, 3):
        try:
            async with uow:
                return await _record(uow, catalog, check_id, requests, actor, channel, now)
        except ports.AlreadyWritten:
            # A concurrent retry recorded the same item first: read what it wrote.
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


async def _record(
    uow: ports.OutcomeUnitOfWork,
    catalog: Catalog,
    check_id: str,
    requests: Sequence[OutcomeRequest],
    actor: Actor,
    channel: str,
    now: datetime | None,
) -> list[RecordedOutcome]:
    now = now or datetime.now(UTC)
    check = await uow.checks.get(check_id)
    if check is None:
        raise NotFound("Unknown check", f"no recognition check {check_id!r}")
    if actor.hospital != check.ordering_hospital:
        raise NotAllowed(
            "Not the ordering hospital",
            f"only doctors of {check.ordering_hospital}, which ordered, may record outcomes",
        )
    items = check.items
    wanted: list[tuple[OutcomeRequest, OutcomeInput, StoredCheckItem]] = []
    for r in requests:
        if not 0 <= r.index < len(items):
            raise Invalid("No such item", f"the check has items 0..{len(items) - 1}, not {r.index}")
        item = items[r.index]
        try:
            wanted.append((r, validate_outcome(item.decision, r.given), item))
        except OutcomeRefused as exc:
            raise Invalid("Outcome refused", f"item {r.index}: {exc}") from None
    recorded = await uow.outcomes.of_check(check_id)
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
        await _still_as_checked(uow, r.index, item)
    period = await uow.ledger.booking_period(now) if accepted else None
    for r, v, item in fresh:
        code = item.catalog_code
        cat = catalog.items.get(code) if code else None
        category = cat.category if cat else None
        reason = v.reason.value if v.reason else None
        await uow.outcomes.add(
            ports.Outcome(
                check_id=check_id,
                item_index=r.index,
                outcome=v.outcome.value,
                reason=reason,
                reason_text=v.reason_text,
                catalog_code=code,
                category=category,
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
            "category": category,
            "result_id": item.candidate,
            "recorded_by": actor.name,
            "channel": channel,
        }
        saved: Decimal | None = None
        if v.outcome is OutcomeKind.ACCEPTED:
            assert period is not None
            saved = to_yuan(item.saving)
            amount_fen = int(saved * 100)
            # The fund's fraction as the check's catalog gave it: fixed here with the fee, so
            # a later catalog change never rewrites the split of what was booked.
            share = item.saving_fund_share
            split = split_fee(amount_fen, share) if share is not None else None
            entry_id = await uow.ledger.add(
                ports.LedgerEntry(
                    dedupe_key=saving_key(check_id, r.index),
                    kind="saving",
                    period=period,
                    amount_fen=amount_fen,
                    ordering_hospital=check.ordering_hospital,
                    source_hospital=item.candidate_hospital,
                    catalog_code=code,
                    category=category,
                    check_id=check_id,
                    item_index=r.index,
                    result_id=item.candidate,
                    recorded_by=actor.name,
                    occurred_at=now,
                    recorded_at=now,
                    fund_share=str(share) if share is not None else None,
                    fund_fen=split.fund_fen if split else None,
                    patient_fen=split.patient_fen if split else None,
                )
            )
            body |= {"amount": f"{saved:.2f}", "period": period, "entry_id": entry_id}
        else:
            body |= {"reason": reason}
        await uow.events.append(v.outcome.value, check.ordering_hospital, body, now)
        out.append(
            RecordedOutcome(
                r.index,
                code,
                v.outcome,
                reason,
                v.reason_text,
                saved,
                actor.name,
                now,
                replayed=False,
            )
        )
    await uow.commit()
    return sorted(out, key=lambda o: o.index)


def _as_recorded(row: ports.Outcome, item: StoredCheckItem, *, replayed: bool) -> RecordedOutcome:
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


async def _still_as_checked(
    uow: ports.OutcomeUnitOfWork, index: int, item: StoredCheckItem
) -> None:
    """Refuse to accept a result that changed after the check answered (the port holds the
    result against ingest until commit, so a withdrawal either is seen here or sees this
    acceptance)."""
    now = await uow.results.lock_current(item.candidate) if item.candidate else None
    if now is None or now.version != item.candidate_version or now.status in WITHDRAWN_STATUSES:
        status = now.status if now is not None else "gone"
        raise Conflict(
            "Result changed since the check",
            f"item {index}: the prior result changed after the check (now {status}); "
            "run the check again before recognising it",
        )
