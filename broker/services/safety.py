"""When a recognised result is corrected or withdrawn: tell the doctor, reverse or flag.

Called by ingest inside the transaction that makes the new version current (through
broker/storage/outcome_uow.py `safety_listener`), so the notice, the ledger entry and the
event exist exactly when the change does. Also called (`undo`) by an unlink of two people
(broker/services/identity_review.py), in the unlink's transaction: a recognition made
through the undone link gets a `link-undone` notice and its saving reversed.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from broker import ports
from broker.domain import check_items
from broker.domain.catalog import Catalog
from broker.domain.ledger import (
    ChangeKind,
    SafetyAction,
    SafetyPolicy,
    change_kind,
    change_notice,
)
from broker.domain.recognition import Text
from broker.domain.results import ResultChange


class SafetyNotifier:
    def __init__(self, policy: SafetyPolicy, catalog: Catalog) -> None:
        self.policy = policy
        self.catalog = catalog

    async def __call__(
        self, uow: ports.SafetyUnitOfWork, changes: list[ResultChange], now: datetime
    ) -> None:
        if not changes:
            return
        by_result = {c.result_id: c for c in changes}
        for outcome in await uow.outcomes.accepted_for(list(by_result)):
            assert outcome.result_id is not None  # accepted outcomes name their result
            change = by_result[outcome.result_id]
            await self._notify(uow, outcome, change, change_kind(change.status), now)

    async def undo(
        self,
        uow: ports.SafetyUnitOfWork,
        outcome: ports.Outcome,
        change: ResultChange,
        now: datetime,
    ) -> None:
        """One recognition made through a patient link that was undone (`change` names
        the result, its hospital and the unlink: broker/services/identity_review.py): the
        doctor gets a `link-undone` notice, the saving is reversed (whatever the policy for
        withdrawn results), once per unlink."""
        await self._notify(uow, outcome, change, ChangeKind.LINK_UNDONE, now)

    async def _notify(
        self,
        uow: ports.SafetyUnitOfWork,
        outcome: ports.Outcome,
        change: ResultChange,
        kind: ChangeKind,
        now: datetime,
    ) -> None:
        check_id, index = outcome.check_id, outcome.item_index
        notice_key = check_items.notice_key(check_id, index, change.message_id)
        if await uow.notices.exists(notice_key):
            return  # this change was handled already (a replayed message)
        action = self.policy.action(kind)
        reason = REASONS[kind]
        base: dict[str, Any] = {
            "check_id": check_id,
            "item_index": index,
            "ordering_hospital": outcome.hospital_id,
            "source_hospital": change.hospital,
            "catalog_code": outcome.catalog_code,
            "category": outcome.category,
            "result_id": change.result_id,
            "change": kind.value,
            "new_status": change.status,
            "recognised_by": outcome.recorded_by,
        }
        saving = await uow.ledger.find(check_items.saving_key(check_id, index))
        if action is SafetyAction.REVERSE and saving is not None:
            reversal = check_items.reversal_key(check_id, index)
            if await uow.ledger.find(reversal) is None:
                period = await uow.ledger.booking_period(now)
                entry_id = await uow.ledger.add(
                    _about(
                        saving,
                        reason,
                        now,
                        dedupe_key=reversal,
                        kind="reversal",
                        period=period,
                        amount_fen=-saving.amount_fen,
                        # both shares taken back (None stays None: no ratio was given)
                        fund_fen=_negated(saving.fund_fen),
                        patient_fen=_negated(saving.patient_fen),
                    )
                )
                amount = Decimal(-saving.amount_fen) / 100
                await uow.events.append(
                    "reversed",
                    outcome.hospital_id,
                    base
                    | {
                        "entry_id": entry_id,
                        "reverses": saving.entry_id,
                        "amount": f"{amount:.2f}",
                        "period": period,
                    },
                    now,
                )
        elif saving is not None:
            entry_id = await uow.ledger.add(
                _about(
                    saving,
                    reason,
                    now,
                    dedupe_key=check_items.flag_key(check_id, index, change.message_id),
                    kind="flag",
                    period=await uow.ledger.booking_period(now),
                    amount_fen=0,
                    fund_fen=None if saving.fund_fen is None else 0,
                    patient_fen=None if saving.patient_fen is None else 0,
                )
            )
            await uow.events.append(
                "flagged", outcome.hospital_id, base | {"entry_id": entry_id}, now
            )
        message = change_notice(
            kind, self._name(outcome.catalog_code), change.hospital, change.status
        )
        await uow.notices.add(
            ports.Notice(
                notice_id=str(uuid.uuid4()),
                dedupe_key=notice_key,
                hospital_id=outcome.hospital_id,
                recipient=outcome.recorded_by,
                check_id=check_id,
                item_index=index,
                result_id=change.result_id,
                kind=kind.value,
                new_status=change.status,
                action=action.value,
                message=message,
                created_at=now,
            )
        )

    def _name(self, code: str | None) -> Text:
        item = self.catalog.items.get(code) if code else None
        return Text(item.name_zh, item.name_en) if item else Text(code or "?", code or "?")


# The ledger entry's reason for a reversal or flag.
REASONS = {
    ChangeKind.CORRECTED: "result corrected",
    ChangeKind.WITHDRAWN: "result withdrawn",
    ChangeKind.LINK_UNDONE: "patient link undone",
}


def _negated(fen: int | None) -> int | None:
    return None if fen is None else -fen


def _about(
    saving: ports.LedgerEntry, reason: str, now: datetime, **entry: Any
) -> ports.LedgerEntry:
    """A reversal or flag of a saving: it repeats the saving's coordinates (hospitals,
    item, check, result) and points at it."""
    return replace(
        saving,
        entry_id=None,
        reverses=saving.entry_id,
        reason=reason,
        recorded_by="mrb-safety",
        occurred_at=now,
        recorded_at=now,
        **entry,
    )
