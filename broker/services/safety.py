"""When a recognised result is corrected or withdrawn: tell the doctor, reverse or flag.

Called by ingest inside the transaction that makes the new version current, so the
notice, the ledger entry and the event exist exactly when the change does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain import check_items
from broker.domain.catalog import Catalog
from broker.domain.ledger import SafetyAction, SafetyPolicy, change_kind, change_notice
from broker.domain.recognition import Text
from broker.domain.results import ResultChange
from broker.storage import events, ledger
from broker.storage.tables import ledger_entry, notification, recognition_outcome


class SafetyNotifier:
    def __init__(self, policy: SafetyPolicy, catalog: Catalog) -> None:
        self.policy = policy
        self.catalog = catalog

    async def __call__(
        self, session: AsyncSession, changes: list[ResultChange], now: datetime
    ) -> None:
        if not changes:
            return
        by_result = {c.result_id: c for c in changes}
        accepted = (
            await session.execute(
                select(recognition_outcome).where(
                    recognition_outcome.c.outcome == "accepted",
                    recognition_outcome.c.result_id.in_(list(by_result)),
                )
            )
        ).all()
        for outcome in accepted:
            await self._one(session, outcome, by_result[outcome.result_id], now)

    async def _one(
        self, s: AsyncSession, outcome: Any, change: ResultChange, now: datetime
    ) -> None:
        check_id, index = outcome.check_id, outcome.item_index
        notice_key = check_items.notice_key(check_id, index, change.message_id)
        if await s.scalar(select(notification.c.id).where(notification.c.dedupe_key == notice_key)):
            return  # this change was handled already (a replayed message)
        kind = change_kind(change.status)
        action = self.policy.action(kind)
        base: dict[str, Any] = {
            "check_id": outcome.check_id,
            "item_index": outcome.item_index,
            "ordering_hospital": outcome.hospital_id,
            "source_hospital": change.hospital,
            "catalog_code": outcome.catalog_code,
            "category": outcome.category,
            "result_id": change.result_id,
            "change": kind.value,
            "new_status": change.status,
            "recognised_by": outcome.recorded_by,
        }
        saving = (
            await s.execute(
                select(ledger_entry).where(
                    ledger_entry.c.dedupe_key == check_items.saving_key(check_id, index)
                )
            )
        ).first()
        if action is SafetyAction.REVERSE and saving is not None:
            reversal = check_items.reversal_key(check_id, index)
            if not await ledger.existing_keys(s, [reversal]):
                period = await ledger.booking_period(s, now)
                entry_id = await ledger.add_entry(
                    s,
                    **_entry_copy(saving),
                    dedupe_key=reversal,
                    kind="reversal",
                    period=period,
                    amount_fen=-saving.amount_fen,
                    reverses=saving.entry_id,
                    reason=f"result {kind.value}",
                    recorded_by="mrb-safety",
                    occurred_at=now,
                    recorded_at=now,
                )
                amount = Decimal(-saving.amount_fen) / 100
                await events.append(
                    s,
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
            entry_id = await ledger.add_entry(
                s,
                **_entry_copy(saving),
                dedupe_key=check_items.flag_key(check_id, index, change.message_id),
                kind="flag",
                period=await ledger.booking_period(s, now),
                amount_fen=0,
                reverses=saving.entry_id,
                reason=f"result {kind.value}",
                recorded_by="mrb-safety",
                occurred_at=now,
                recorded_at=now,
            )
            await events.append(
                s, "flagged", outcome.hospital_id, base | {"entry_id": entry_id}, now
            )
        message = change_notice(
            kind, self._name(outcome.catalog_code), change.hospital, change.status
        )
        await s.execute(
            notification.insert().values(
                notice_id=str(uuid.uuid4()),
                dedupe_key=notice_key,
                hospital_id=outcome.hospital_id,
                recipient=outcome.recorded_by,
                check_id=outcome.check_id,
                item_index=outcome.item_index,
                result_id=change.result_id,
                kind=kind.value,
                new_status=change.status,
                action=action.value,
                message={"zh": message.zh, "en": message.en},
                created_at=now,
            )
        )

    def _name(self, code: str | None) -> Text:
        item = self.catalog.items.get(code) if code else None
        return Text(item.name_zh, item.name_en) if item else Text(code or "?", code or "?")


def _entry_copy(saving: Any) -> dict[str, Any]:
    """The saving's coordinates, which its reversal or flag repeats."""
    return {
        k: getattr(saving, k)
        for k in (
            "ordering_hospital",
            "source_hospital",
            "catalog_code",
            "category",
            "check_id",
            "item_index",
            "result_id",
        )
    }
