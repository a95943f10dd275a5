"""`mrb patient access-report`: a patient's own access report (PIPL Arts. 44-45).

The operator acts in the `audit` role, the one duty that reads the audit trail (三员分立),
as `GET /api/v1/patients/access-report` does; producing the report is audited under
their name (--by, MRB_OPERATOR or the login name).

`mrb patient review|link|unlink`: patient identity across hospitals (issue #17), in the
`platform-admin` role (links span hospitals), each change audited under the operator's
name. A person is named by person id (as `review` lists them) or by an identifier
SYSTEM|VALUE, with --hospital for a hospital's own identifier (an MRN).
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
from broker.domain.identity_review import PersonRef, ReviewStatus, Verdict, parse_person
from broker.services import identity_review
from broker.services.access_report import (
    HEADERS,
    NOT_IN_ITS_OWN_REPORT,
    AccessReport,
    ReportRequest,
    parse_day,
    parse_identifier,
)

app = typer.Typer(
    help="A patient's rights (who read their data); identity across hospitals (review, link, "
    "unlink).",
    no_args_is_help=True,
)
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


PERSON_HELP = "A person id (as `mrb patient review` lists them) or an identifier SYSTEM|VALUE."
HOSPITAL_HELP = "The hospital that issued an identifier given as SYSTEM|VALUE (an MRN)."


def _person(text: str, hospital: str | None) -> PersonRef:
    try:
        return parse_person(text, hospital)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("review")
def review(
    decide: Annotated[
        tuple[str, str] | None,
        typer.Option(help="Decide one item: REVIEW_ID confirm|reject.", metavar="ID VERDICT"),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="List every item, decided ones too.")] = False,
    limit: Annotated[int, typer.Option(help="How many items to list.")] = 100,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """List the possible matches waiting for review, or decide one (--decide ID confirm)."""
    actor = operator(Role.PLATFORM_ADMIN, by)
    if decide is not None:
        review_id, said = decide
        try:
            verdict = Verdict(said)
        except ValueError:
            raise typer.BadParameter("--decide takes REVIEW_ID confirm|reject") from None

        async def decide_one(container: Container) -> dict[str, object]:
            return await identity_review.decide(container.identity_uow(), actor, review_id, verdict)

        done = with_container(decide_one)
        console.print(
            f"review {review_id}: {done['status']}"
            + (f" (link {done['link_id']})" if done.get("link_id") else "")
        )
        return

    async def listed(container: Container) -> list[dict[str, object]]:
        status = None if all_ else ReviewStatus.OPEN
        return await identity_review.list_reviews(
            container.identity_uow(), actor, status=status, limit=limit
        )

    items = with_container(listed)
    table = Table(title="Patient identity review" + ("" if all_ else " (open)"))
    for column in (
        "review",
        "person",
        "candidate",
        "hospital",
        "decision",
        "total",
        "levels",
        "status",
        "created",
    ):
        table.add_column(column, overflow="fold")
    for i in items:
        fields = i["fields"]
        assert isinstance(fields, list)
        levels = " ".join(f"{x['field']}={x['level']}({x['weight']:+.1f})" for x in fields)
        table.add_row(
            str(i["review_id"]),
            str(i["person_id"]),
            str(i["candidate_id"]),
            str(i["hospital"]),
            str(i["decision"]),
            f"{i['total']}",
            levels,
            str(i["status"]),
            str(i["created_at"]),
        )
    console.print(table)
    if not items:
        console.print("no review items")


@app.command("link")
def link(
    into: Annotated[str, typer.Argument(help="The person kept. " + PERSON_HELP)],
    person: Annotated[str, typer.Argument(help="The person linked into it. " + PERSON_HELP)],
    hospital: Annotated[str | None, typer.Option(help=HOSPITAL_HELP)] = None,
    into_hospital: Annotated[
        str | None,
        typer.Option(
            help="The hospital of INTO's identifier, when it differs from --hospital (an MRN "
            "of each hospital: --into-hospital H001 --hospital H002)."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Link PERSON into INTO: reads of either find both; `unlink` undoes it exactly."""
    actor = operator(Role.PLATFORM_ADMIN, by)
    a, b = _person(into, into_hospital or hospital), _person(person, hospital)

    async def work(container: Container) -> str:
        made = await identity_review.link_people(
            container.identity_uow(), container.identifiers(), actor, a, b
        )
        return f"linked {made.person_id} into {made.into_person_id} (link {made.link_id})"

    console.print(with_container(work))


@app.command("unlink")
def unlink(
    person: Annotated[str, typer.Argument(help="The linked person. " + PERSON_HELP)],
    hospital: Annotated[str | None, typer.Option(help=HOSPITAL_HELP)] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
) -> None:
    """Undo PERSON's link; recognitions made through it are treated as withdrawn results
    (the doctor is notified, the saving reversed)."""
    actor = operator(Role.PLATFORM_ADMIN, by)
    ref = _person(person, hospital)

    async def work(container: Container) -> str:
        done = await identity_review.unlink_person(
            container.identity_uow(),
            container.identifiers(),
            container.safety_notifier(),
            actor,
            ref,
        )
        return (
            f"unlinked {done.person_id} from {done.from_person_id} (link {done.link_id}); "
            f"recognitions undone: {done.recognitions_undone}"
        )

    console.print(with_container(work))
