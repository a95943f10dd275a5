"""Finance: savings from the ledger (finance: own hospital; platform-finance: all), the
regulator's monthly report (platform-finance), closing months (platform-admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Response

from broker.api.deps import (
    CityReportsDep,
    ContainerDep,
    LedgerCloseDep,
    LedgerReadDep,
    SavingsDep,
)
from broker.domain.actors import Duty
from broker.domain.errors import Invalid
from broker.domain.ledger import parse_month
from broker.ports.reports import Side
from broker.services import reports, xlsx
from broker.services.periods import close_month, closed_months

router = APIRouter(prefix="/api/v1", tags=["finance"])
CSV = "text/csv; charset=utf-8"
Format = Literal["json", "csv", "xlsx"]


def _wanted(format_: Format | None, accept: str | None) -> Format:
    """`format=` wins; else the Accept header (the .xlsx media type, then text/csv)."""
    if format_ is not None:
        return format_
    if xlsx.MEDIA_TYPE in (accept or ""):
        return "xlsx"
    return "csv" if "text/csv" in (accept or "") else "json"


def _workbook(content: bytes, name: str) -> Response:
    """An .xlsx download; the file name is ASCII (and RFC 5987 for any other character)."""
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return Response(
        content,
        media_type=xlsx.MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(name)}"
        },
    )


@router.get("/savings", response_model=None)
async def savings(
    container: ContainerDep,
    actor: SavingsDep,
    group_by: reports.GroupBy = "hospital",
    hospital: Annotated[
        str | None, Query(description="one hospital (the ordering one, or see `side`)")
    ] = None,
    side: Annotated[
        Side,
        Query(
            description="ordering: savings the hospital made by recognising others' results; "
            "source: savings its results enabled at other hospitals"
        ),
    ] = "ordering",
    from_: Annotated[str | None, Query(alias="from", description="YYYY-MM or a day")] = None,
    to: Annotated[str | None, Query(description="YYYY-MM or a day (inclusive)")] = None,
    format: Format | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response | dict[str, Any]:
    """Recognitions, yuan saved, reversals and declines by reason, per group of booked months,
    with the medical-insurance fund's and the patient's shares where the catalog gave a
    reimbursement ratio (`fund_share` / `patient_share` null otherwise, never 0).

    Finance staff of one hospital see their hospital's savings only; platform-finance
    sees every hospital's, or the one named. JSON, CSV (`format=csv` or Accept text/csv) or
    Excel (`format=xlsx` or Accept
    application/vnd.openxmlformats-officedocument.spreadsheetml.sheet).
    """
    scope = hospital if actor.platform else (hospital or actor.hospital)
    if scope is not None:
        actor.authorize(Duty.SAVINGS, scope)
    try:
        period_from, period_to = reports.period_bound(from_), reports.period_bound(to)
    except ValueError as exc:
        raise Invalid("Invalid period", str(exc)) from None
    async with container.report_figures() as figures:
        report = await reports.savings(
            figures,
            group_by,
            period_from=period_from,
            period_to=period_to,
            hospital=scope,
            side=side,
        )
    wanted = _wanted(format, accept)
    if wanted == "xlsx":
        span = "_".join(p for p in (period_from, period_to) if p) or "all-months"
        who = f"{scope}-{side}" if scope else "all-hospitals"
        return _workbook(report.as_xlsx(), f"mrb-savings-{who}-by-{group_by}-{span}.xlsx")
    if wanted == "csv":
        return Response(report.as_csv(), media_type=CSV)
    return report.as_dict()


@router.get("/reports/regulator", response_model=None)
async def regulator_report(
    container: ContainerDep,
    actor: CityReportsDep,
    month: Annotated[str, Query(description="YYYY-MM")],
    format: Format | None = None,
    accept: Annotated[str | None, Header()] = None,
) -> Response | dict[str, Any]:
    """The provincial health commission's monthly return (platform-wide): JSON, CSV or
    Excel (`format=xlsx`), negotiated as for /savings."""
    try:
        parse_month(month)
    except ValueError as exc:
        raise Invalid("Invalid month", str(exc)) from None
    async with container.report_figures() as figures:
        report = await reports.regulator(figures, month)
    wanted = _wanted(format, accept)
    if wanted == "xlsx":
        return _workbook(report.as_xlsx(), f"mrb-regulator-report-{month}.xlsx")
    if wanted == "csv":
        return Response(report.as_csv(), media_type=CSV)
    return report.as_dict()


@router.get("/ledger/periods")
async def closed_periods(container: ContainerDep, actor: LedgerReadDep) -> list[str]:
    """Closed months: entries that would fall in them book into the next open month."""
    return await closed_months(container.month_uow())


@router.post("/ledger/periods/{month}/close")
async def close_period(
    month: str, container: ContainerDep, actor: LedgerCloseDep
) -> dict[str, Any]:
    """Close a month (platform-admin); audited."""
    try:
        closed = await close_month(container.month_uow(), month, by=actor)
    except ValueError as exc:
        raise Invalid("Invalid month", str(exc)) from None
    return {"period": month, "closed": True, "already_closed": not closed}
