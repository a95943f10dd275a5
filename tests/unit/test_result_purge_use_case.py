"""Purging results past retention (broker/services/retention.py `purge_results`) on fakes:
which results go, batching with one audit entry per batch, dry runs and idempotence (on a
database: tests/integration/test_result_retention.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.catalog import LOINC_SYSTEM, Catalog
from broker.domain.results import Coding
from broker.domain.retention_policy import RetentionPeriod, RetentionPolicy
from broker.ports import admin as ports
from broker.reference.loader import default_schemas_dir, load_catalog
from broker.services.retention import purge_results
from tests.fakes import FakeChangeLog, _FakeTransaction

ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
NOW = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
POLICY = RetentionPolicy(
    RetentionPeriod(900),
    {"lab": RetentionPeriod(730), "imaging": RetentionPeriod(800)},
    {"LAB-PLT": RetentionPeriod(1000)},
    version="t1",
)
HB = ports.HeldRow((Coding(LOINC_SYSTEM, "718-7"),))
PLT = ports.HeldRow((Coding(LOINC_SYSTEM, "777-3"),))


class FakeResultRetention(ports.ResultRetention):
    def __init__(self, *held: ports.HeldResult) -> None:
        self.held = {h.result_id: h for h in held}
        self.scans: list[tuple[datetime, str | None, int]] = []

    async def anchored_by(
        self, cutoff: datetime, *, after: str | None, limit: int
    ) -> list[ports.HeldResult]:
        self.scans.append((cutoff, after, limit))
        found = sorted(
            (
                h
                for h in self.held.values()
                if (h.effective or h.issued or h.received) <= cutoff
                and (after is None or h.result_id > after)
            ),
            key=lambda h: h.result_id,
        )
        return found[:limit]

    async def remove(self, result_ids: Sequence[str]) -> ports.Removed:
        gone = tuple(r for r in result_ids if self.held.pop(r, None) is not None)
        return ports.Removed(gone, len(gone))


class FakeResultPurgeUnitOfWork(_FakeTransaction, ports.ResultPurgeUnitOfWork):
    changes: FakeChangeLog

    def __init__(self, results: FakeResultRetention) -> None:
        self.results = results
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"results": self.results, "changes": self.changes}


def held(
    rid: str,
    age_days: int,
    kind: str = "lab",
    rows: tuple[ports.HeldRow, ...] = (HB,),
    *,
    effective: bool = True,
) -> ports.HeldResult:
    at = NOW - timedelta(days=age_days)
    return ports.HeldResult(rid, "H001", kind, at if effective else None, None, at, rows)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_schemas_dir())


async def test_results_past_their_period_go_batch_by_batch_each_audited(
    catalog: Catalog,
) -> None:
    store = FakeResultRetention(
        held("r1", 731),  # lab, past 730 days
        held("r2", 729),  # lab, not yet
        held("r3", 730),  # lab, exactly at the limit: past
        held("r4", 900, rows=(HB, PLT)),  # a row of LAB-PLT keeps it 1000 days
        held("r5", 801, "imaging", rows=()),
        held("r6", 950, "genomics", rows=()),  # unknown category: the default, 900
        held("r7", 2000, effective=False),  # no effective time: counted from receipt
        held("r8", 10, effective=False),
    )
    uow = FakeResultPurgeUnitOfWork(store)
    done = await purge_results(uow, POLICY, catalog, by=ADMIN, now=NOW, batch=2)
    assert (done.results, done.by_category) == (5, {"genomics": 1, "imaging": 1, "lab": 3})
    assert sorted(store.held) == ["r2", "r4", "r8"]
    assert {s[0] for s in store.scans} == {NOW - timedelta(days=730)}  # the shortest period
    # r2 and r8 are anchored too late to be read at all (the last, empty scan is in a
    # transaction rolled back, which the fake forgets).
    assert [s[1:] for s in store.scans] == [(None, 2), ("r3", 2), ("r5", 2)]
    changes = uow.changes.changes
    assert [c["action"] for c in changes] == ["result.purge"] * 3  # batches removing any
    assert [c["detail"]["result_ids"] for c in changes] == [["r1", "r3"], ["r5"], ["r6", "r7"]]
    assert changes[2]["detail"]["by_category"] == {"genomics": 1, "lab": 1}
    assert changes[0]["detail"]["policy"] == "t1" and changes[0]["actor"] == "sys.zhang"
    assert uow.commits == 3


async def test_a_second_run_removes_nothing_and_is_audited_once(catalog: Catalog) -> None:
    store = FakeResultRetention(held("r1", 800))
    uow = FakeResultPurgeUnitOfWork(store)
    assert (await purge_results(uow, POLICY, catalog, by=ADMIN, now=NOW)).results == 1
    again = await purge_results(uow, POLICY, catalog, by=ADMIN, now=NOW)
    assert (again.results, again.by_category, again.payloads) == (0, {}, 0)
    assert [c["detail"]["results"] for c in uow.changes.changes] == [1, 0]


async def test_a_dry_run_counts_and_changes_nothing(catalog: Catalog) -> None:
    store = FakeResultRetention(held("r1", 800), held("r2", 10), held("r3", 900, "imaging"))
    uow = FakeResultPurgeUnitOfWork(store)
    done = await purge_results(uow, POLICY, catalog, by=ADMIN, now=NOW, batch=1, dry_run=True)
    assert (done.dry_run, done.by_category) == (True, {"imaging": 1, "lab": 1})
    assert sorted(store.held) == ["r1", "r2", "r3"]
    assert uow.changes.changes == [] and uow.commits == 0


async def test_a_batch_under_one_is_refused(catalog: Catalog) -> None:
    uow = FakeResultPurgeUnitOfWork(FakeResultRetention(held("r1", 800)))
    with pytest.raises(ValueError, match="at least 1"):
        await purge_results(uow, POLICY, catalog, by=ADMIN, now=NOW, batch=0)
    assert uow.changes.changes == []
