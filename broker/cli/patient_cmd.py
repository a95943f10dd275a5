"""`mrb patient access-report`: a patient's own access report (PIPL Arts. 44-45).

The operator acts in the `audit` role, the one duty that reads the audit trail (三员分立),
as `GET /api/v1/patients/access-report` does; producing the report is audited under
their name (--by, MRB_OPERATOR or the login name).
"""

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
from broker.services.access_report import (
    HEADERS,
    NOT_IN_ITS_OWN_REPORT,
    AccessReport,
    ReportRequest,
    parse_day,
    parse_identifier,
)

app = typer.Typer(help="A patient's rights: who read their data.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
FORMATS = ("table", "json", "fhir", "csv")


@app.command("access-report")
def access_report(
    identifier: Annotated[
        str, typer.Option(help="The patient's identifier, SYSTEM|VALUE (a resident ID, an MRN).")
    ],
    hospital: Annotated[
        str | None, typer.Option(help="The hospital that issued it (needed for an MRN).")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (Asia/Shanghai).")
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="The day after the last, YYYY-MM-DD; default tomorrow.")
    ] = None,
    format: Annotated[str, typer.Option(help="table, json, fhir or csv.")] = "table",
    lang: Annotated[str, typer.Option(help="zh or en (the table).")] = "zh",
    output: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Who read one patient's data, when, from where, why, and which recognitions used it."""
    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if lang not in HEADERS:
        raise typer.BadParameter("--lang must be zh or en")
    actor = operator(Role.AUDIT, by)

    async def work(container: Container) -> tuple[AccessReport, str]:
        system, value = parse_identifier(identifier)
        asked = ReportRequest(
            system, value, hospital, parse_day(from_, "--from"), parse_day(to, "--to")
        )
        report = await container.access_reports().report(actor, asked)
        return report, container.settings.resolved_public_base_url + "fhir"

    report, base = with_container(work)
    if format == "csv":
        _emit(report.as_csv(), output)
    elif format == "json":
        _emit(json.dumps(report.as_dict(), ensure_ascii=False, indent=2), output)
    elif format == "fhir":
        _emit(json.dumps(report.as_fhir(base), ensure_ascii=False, indent=2), output)
    else:
        _table(report, lang)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def _table(report: AccessReport, lang: str) -> None:
    end = report.end.isoformat()
    title = (
        f"Access report {report.start.isoformat()} .. {end} (exclusive), Asia/Shanghai"
        if lang == "en"
        else f"个人信息访问记录 {report.start.isoformat()} 至 {end}（不含），北京时间"
    )
    table = Table(title=title)
    for column in HEADERS[lang]:
        table.add_column(column, overflow="fold")
    for row in report.rows(lang):
        table.add_row(*row)
    console.print(table)
    if not report.entries:
        console.print("no entries" if lang == "en" else "期间内没有访问记录")
    console.print(NOT_IN_ITS_OWN_REPORT.en if lang == "en" else NOT_IN_ITS_OWN_REPORT.zh)
