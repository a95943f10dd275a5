"""Purging payloads (broker/services/retention.py) on fakes: the cutoff, the count and the
audit entry written with it (on a database: tests/integration/test_payload_purge.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.services.retention import purge_payloads
from tests.fakes import FakePayloadRetention, FakePurgeUnitOfWork

ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
NOW = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)


async def test_payloads_older_than_the_policy_are_erased_and_the_purge_is_audited() -> None:
    payloads = FakePayloadRetention(NOW - timedelta(days=40), NOW - timedelta(days=10))
    uow = FakePurgeUnitOfWork(payloads)
    assert await purge_payloads(uow, 30, by=ADMIN, now=NOW) == 1
    assert payloads.cutoffs == [NOW - timedelta(days=30)]
    assert payloads.received == [NOW - timedelta(days=10)]
    [change] = uow.changes.changes
    assert change["action"] == "payload.purge"
    assert change["detail"] == {
        "older_than_days": 30,
        "received_before": (NOW - timedelta(days=30)).isoformat(),
        "payloads": 1,
    }
    assert uow.commits == 1


async def test_a_policy_under_one_day_is_refused_before_anything_is_erased() -> None:
    payloads = FakePayloadRetention(NOW - timedelta(hours=2))
    uow = FakePurgeUnitOfWork(payloads)
    with pytest.raises(ValueError, match="at least 1 day"):
        await purge_payloads(uow, 0, by=ADMIN, now=NOW)
    assert payloads.cutoffs == [] and uow.changes.changes == []
