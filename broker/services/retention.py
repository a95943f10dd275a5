"""Purging per the retention policies, audited administrative actions: raw payloads past
MRB_PAYLOAD_RETENTION_DAYS (`purge_payloads`), and results past their category's period in
schemas/catalog/retention.yaml (`purge_results`, broker/domain/retention_policy.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker.domain.actors import Actor
from broker.domain.catalog import Catalog
from broker.domain.retention_policy import RetentionPolicy, anchor
from broker.ports.admin import HeldResult, HeldRow, PurgeUnitOfWork, ResultPurgeUnitOfWork


async def purge_payloads(
    uow: PurgeUnitOfWork,
    older_than_days: int,
    *,
    by: Actor,
    now: datetime | None = None,
) -> int:
    """Erase the payloads received more than `older_than_days` days ago, and audit it in
    the same transaction; how many were erased. ValueError for a policy under one day."""
    if older_than_days < 1:
        raise ValueError("--older-than must be at least 1 day")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    async with uow:
        erased = await uow.payloads.purge_received_before(cutoff)
        await uow.changes.record(
            by,
            action="payload.purge",
            hospital=None,
            detail={
                "older_than_days": older_than_days,
                "received_before": cutoff.isoformat(),
                "payloads": erased,
            },
        )
        await uow.commit()
    return erased


DEFAULT_BATCH = 500  # results per transaction: a big purge holds no long transaction


@dataclass(frozen=True)
class ResultPurge:
    """What a run of `purge_results` removed (or, dry, would remove)."""

    by_category: Mapping[str, int]
    payloads: int
    dry_run: bool
    policy: str

    @property
    def results(self) -> int:
        return sum(self.by_category.values())


async def purge_results(
    uow: ResultPurgeUnitOfWork,
    policy: RetentionPolicy,
    catalog: Catalog,
    *,
    by: Actor,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    dry_run: bool = False,
) -> ResultPurge:
    """Remove the results past retention from the index, the FHIR search facade and their
    payloads, `batch` results per transaction, each batch audited in its own transaction
    (a run removing nothing is audited once); the ledger and the audit trail stay. Dry: count
    only, change and audit nothing. Idempotent: a second run finds nothing more."""
    if batch < 1:
        raise ValueError("--batch must be at least 1")
    now = now or datetime.now(UTC)
    cutoff = now - policy.shortest.delta  # nothing anchored after it can have expired
    counts: Counter[str] = Counter()
    payloads = 0
    after: str | None = None
    while True:
        async with uow:
            held = await uow.results.anchored_by(cutoff, after=after, limit=batch)
            if not held:
                break
            after = held[-1].result_id
            expired = {h.result_id: h for h in held if _expired(h, policy, catalog, now)}
            if dry_run:
                counts.update(h.category for h in expired.values())
                continue
            if not expired:
                continue
            removed = await uow.results.remove(sorted(expired))
            done = Counter(expired[rid].category for rid in removed.result_ids)
            await _audit(uow, by, policy, now, done, removed.payloads, removed.result_ids)
            await uow.commit()
            counts.update(done)
            payloads += removed.payloads
    if not dry_run and not counts:
        async with uow:
            await _audit(uow, by, policy, now, Counter(), 0, ())
            await uow.commit()
    return ResultPurge(dict(sorted(counts.items())), payloads, dry_run, policy.version)


def _expired(held: HeldResult, policy: RetentionPolicy, catalog: Catalog, now: datetime) -> bool:
    at = anchor(held.effective, held.issued, held.received)
    items = [_item_of(row, held.hospital, catalog) for row in held.rows]
    return policy.expired(held.category, at, now, items)


def _item_of(row: HeldRow, hospital: str, catalog: Catalog) -> str | None:
    """The catalog item a row maps to as the rules map it (a coding, else an imaging
    row's modality, body site and protocol); None for none."""
    for c in row.codings:
        item = catalog.item_for_code(hospital, c.system, c.code)
        if item is not None:
            return item.code
    if row.modality:
        item = catalog.imaging_item(row.modality, row.body_site, row.protocol)
        if item is not None:
            return item.code
    return None


async def _audit(
    uow: ResultPurgeUnitOfWork,
    by: Actor,
    policy: RetentionPolicy,
    now: datetime,
    done: Counter[str],
    payloads: int,
    result_ids: tuple[str, ...],
) -> None:
    await uow.changes.record(
        by,
        action="result.purge",
        hospital=None,
        detail={
            "policy": policy.version,
            "now": now.isoformat(),
            "results": sum(done.values()),
            "by_category": dict(sorted(done.items())),
            "payloads": payloads,
            "result_ids": list(result_ids),
        },
    )
