"""`mrb report savings|regulator` and `mrb ledger close|periods`: finance from the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.domain.ledger import parse_month
from broker.services import reports
from broker.services.periods import close_month
from broker.storage import ledger

app = typer.Typer(help="Finance and regulator reports.", no_args_is_help=True)
ledger_app = typer.Typer(help="The savings ledger's accounting months.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _month(value: str) -> str:
    try:
        parse_month(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


@app.command("savings")
def savings(
    group_by: Annotated[
        str, typer.Option(help="hospital (ordering), source (result's), item, month or category.")
    ] = "hospital",
    from_: Annotated[str | None, typer.Option("--from", help="First month, YYYY-MM.")] = None,
    to: Annotated[str | None, typer.Option(help="Last month, YYYY-MM (inclusive).")] = None,
    hospital: Annotated[str | None, typer.Option(help="Only this hospital (see --side).")] = None,
    side: Annotated[
        str,
        typer.Option(
            help="ordering: what --hospital saved; source: what its results saved elsewhere."
        ),
    ] = "ordering",
    format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
) -> None:
    """Recognitions, yuan saved, reversals and declines by reason, from the ledger."""
    if group_by not in reports.GROUPS:
        raise typer.BadParameter(f"--group-by must be one of {', '.join(reports.GROUPS)}")
    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    if side not in reports.SIDES:
        raise typer.BadParameter(f"--side must be one of {', '.join(reports.SIDES)}")

    async def work(container: Container) -> reports.SavingsReport:
        async with container.report_figures() as figures:
            return await reports.savings(
                figures,
                group_by,
                period_from=reports.period_bound(from_),
                period_to=reports.period_bound(to),
                hospital=hospital,
                side=side,
            )

    report = with_container(work)
    if format == "csv":
        _emit(report.as_csv(), output)
    elif format == "json":
        _emit(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), output)
    else:
        _table(report)


def _table(report: reports.SavingsReport) -> None:
    span = f"{report.period_from or 'start'} .. {report.period_to or 'now'}"
    table = Table(title=f"Savings by {report.group_by} ({span}), yuan")
    for col in ("", "recognitions", "saved", "reversals", "reversed", "net", "declined"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [(k, f) for k, f in sorted(report.rows.items())]
    for key, f in [*rows, ("TOTAL", report.totals)]:
        table.add_row(
            key,
            str(f.recognitions),
            reports.yuan(f.saved_fen),
            str(f.reversals),
            reports.yuan(f.reversed_fen),
            reports.yuan(f.net_fen),
            str(f.declined),
        )
    console.print(table)
    if report.totals.declines:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(report.totals.declines.items()))
        console.print(f"declines by reason: {reasons}")


@app.command("regulator")
def regulator(
    month: Annotated[str, typer.Option(help="The month reported, YYYY-MM.")],
    format: Annotated[str, typer.Option(help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
) -> None:
    """The provincial health commission's monthly return: by hospital and item category."""
    _month(month)
    if format not in ("csv", "json"):
        raise typer.BadParameter("--format must be csv or json")

    async def work(container: Container) -> reports.RegulatorReport:
        async with container.report_figures() as figures:
            return await reports.regulator(figures, month)

    report = with_container(work)
    if format == "json":
        _emit(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), output)
    else:
        _emit(report.as_csv(), output)


@ledger_app.command("close")
def close(
    month: Annotated[str, typer.Argument(help="The month to close, YYYY-MM.")],
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Close a month: later savings and reversals book into the next open month."""
    _month(month)
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(container: Container) -> bool:
        return await close_month(container.month_uow(), month, by=actor)

    if with_container(work):
        console.print(f"closed {month}")
    else:
        console.print(f"{month} was already closed")


@ledger_app.command("periods")
def periods() -> None:
    """List the closed months."""

    async def work(container: Container) -> set[str]:
        async with container.sessions() as s:
            return await ledger.closed_periods(s)

    closed = sorted(with_container(work))
    console.print("closed: " + (", ".join(closed) if closed else "none"))
