"""Closing a ledger month (broker/services/periods.py) on fakes: once, by a platform
administrator, audited with its actor (on a database: tests/e2e/test_access_matrix.py)."""

from __future__ import annotations

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.services.periods import close_month
from tests.fakes import FakeMonthUnitOfWork

PLATFORM = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)


async def test_a_month_is_closed_once_and_audited_once() -> None:
    uow = FakeMonthUnitOfWork()
    assert await close_month(uow, "2026-05", by=PLATFORM)
    assert not await close_month(uow, "2026-05", by=PLATFORM)
    assert uow.months.closed_by == {"2026-05": "sys.zhang"}
    assert uow.changes.changes == [
        {
            "actor": "sys.zhang",
            "action": "ledger.close",
            "hospital": None,
            "detail": {"period": "2026-05"},
        }
    ]


@pytest.mark.parametrize("month", ["2026-13", "May 2026", "2026-5"])
async def test_a_malformed_month_is_refused(month: str) -> None:
    uow = FakeMonthUnitOfWork()
    with pytest.raises(ValueError, match="is not a month; write YYYY-MM"):
        await close_month(uow, month, by=PLATFORM)
    assert uow.months.closed_by == {} and uow.commits == 0


async def test_only_a_platform_admin_closes_months() -> None:
    uow = FakeMonthUnitOfWork()
    with pytest.raises(Forbidden):
        await close_month(uow, "2026-05", by=Actor("fin.li", Role.FINANCE, "H001"))
    assert uow.months.closed_by == {}
