"""Finance: savings from the ledger, the regulator's monthly report, closing months."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response

from broker.api.deps import ContainerDep, FinanceDep
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.ledger import parse_month
from broker.services import reports
from broker.services.errors import ServiceError
from broker.storage import ledger

router = APIRouter(prefix="/api/v1", tags=["finance"])
CSV = "text/csv; charset=utf-8"


def _wants_csv(format_: str | None, accept: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in (accept or "")


def _platform_wide(actor: Actor) -> None:
    if actor.role is not Role.ADMIN and actor.hospital != ALL_HOSPITALS:
        raise ServiceError(
            403, "Platform scope needed", "this needs an admin, or finance with hospital '*'"
        )


@router.get("/savings", response_model=None)
async def savings(
    container: ContainerDep,
    actor: FinanceDep,
    group_by: reports.GroupBy = "hospital",
    from_: Annotated[str | None, Query(alias="from", description="YYYY-MM or a day")] = None,
    to: Annotated[str | None, Query(description="YYYY-MM or a day (inclusive)")] = None,
    format: Literal["json", "csv"] | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response | dict[str, Any]:
    """Recognitions, yuan saved, reversals and declines by reason, per group of booked months.

    Finance staff of one hospital see their hospital's savings; '*' and admins see all.
    """
    try:
        period_from, period_to = reports.period_bound(from_), reports.period_bound(to)
    except ValueError as exc:
        raise ServiceError(422, "Invalid period", str(exc)) from None
    scope = None if actor.role is Role.ADMIN else actor.hospital
    async with container.sessions() as s:
        report = await reports.savings(
            s, group_by, period_from=period_from, period_to=period_to, hospital=scope
        )
    if _wants_csv(format, accept):
        return Response(report.as_csv(), media_type=CSV)
    return report.as_dict()


@router.get("/reports/regulator", response_model=None)
async def regulator_report(
    container: ContainerDep,
    actor: FinanceDep,
    month: Annotated[str, Query(description="YYYY-MM")],
    format: Literal["json", "csv"] | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response | dict[str, Any]:
    """The provincial health commission's monthly return (platform-wide)."""
    _platform_wide(actor)
    try:
        parse_month(month)
    except ValueError as exc:
        raise ServiceError(422, "Invalid month", str(exc)) from None
    async with container.sessions() as s:
        report = await reports.regulator(s, month)
    if _wants_csv(format, accept):
        return Response(report.as_csv(), media_type=CSV)
    return report.as_dict()


@router.get("/ledger/periods")
async def closed_periods(container: ContainerDep, actor: FinanceDep) -> list[str]:
    """Closed months: entries that would fall in them book into the next open month."""
    async with container.sessions() as s:
        return sorted(await ledger.closed_periods(s))


@router.post("/ledger/periods/{month}/close")
async def close_period(month: str, container: ContainerDep, actor: FinanceDep) -> dict[str, Any]:
    _platform_wide(actor)
    try:
        parse_month(month)
    except ValueError as exc:
        raise ServiceError(422, "Invalid month", str(exc)) from None
    async with container.sessions() as s, s.begin():
        closed = await ledger.close_period(s, month, actor.name, datetime.now(UTC))
    return {"period": month, "closed": True, "already_closed": not closed}
