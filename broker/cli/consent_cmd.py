"""`mrb consent ...`: a patient's opt-out and consents (issue "Patient rights"), and the
break-glass report.

`record`, `withdraw` and `list` act as a doctor of --hospital (a hospital holding the
patient's results), as `POST /api/v1/patients/consents` does; each is audited under --by.
`break-glass-report` acts as the security administrator, as `GET /api/v1/audit/break-glass`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Actor, Role
from broker.domain.consent import ConsentKind, ConsentRecord
from broker.services.access_report import parse_day, parse_identifier
from broker.services.consents import NewConsent, report_period

app = typer.Typer(
    help="A patient's consent and opt-out of sharing; the break-glass report.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
HospitalOpt = Annotated[
    str, typer.Option(help="Your hospital: one holding results of the patient.")
]
ByOpt = Annotated[str | None, typer.Option(help=BY_HELP)]


def _doctor(hospital: str, by: str | None) -> Actor:
    who = operator(Role.PLATFORM_ADMIN, by)  # the name only; the act is a doctor's
    return Actor(who.name, Role.DOCTOR, hospital)


def _expires(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("--expires: YYYY-MM-DD or an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row(r: ConsentRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind.value,
        "category": r.category,
        "status": r.status(datetime.now(UTC)),
        "recorded_by": r.recorded_by,
        "recorded_hospital": r.recorded_hospital,
        "recorded_at": r.recorded_at.isoformat(),
        "evidence": r.evidence,
        "expires": r.expires_at.isoformat() if r.expires_at else None,
        "withdrawn_at": r.withdrawn_at.isoformat() if r.withdrawn_at else None,
    }


@app.command("record")
def record(
    identifier: Annotated[str, typer.Option(help="The patient's identifier, SYSTEM|VALUE.")],
    hospital: HospitalOpt,
    kind: Annotated[str, typer.Option(help="opt-out, or sensitive (a category's consent).")],
    evidence: Annotated[str, typer.Option(help="Reference to the signed form you keep.")],
    category: Annotated[
        str | None, typer.Option(help="The sensitive category (HIV, SYPHILIS, ...).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="When it ends (required for a consent).")
    ] = None,
    by: ByOpt = None,
) -> None:
    """Record an opt-out of cross-hospital sharing, or a consent for a sensitive category."""
    if kind not in (k.value for k in ConsentKind):
        raise typer.BadParameter("--kind must be opt-out or sensitive")
    actor = _doctor(hospital, by)
    system, value = parse_identifier(identifier)
    new = NewConsent(system, value, ConsentKind(kind), evidence, category, _expires(expires))

    async def work(container: Container) -> ConsentRecord:
        return await container.consent_service().record(actor, new)

    done = with_container(work)
    console.print(json.dumps(_row(done), ensure_ascii=False, indent=2), highlight=False)


@app.command("withdraw")
def withdraw(
    consent_id: Annotated[str, typer.Argument(help="The consent's id.")],
    hospital: HospitalOpt,
    by: ByOpt = None,
) -> None:
    """Withdraw a consent or opt-out: it counts for nothing from the next request on."""
    actor = _doctor(hospital, by)

    async def work(container: Container) -> ConsentRecord:
        return await container.consent_service().withdraw(actor, consent_id)

    done = with_container(work)
    console.print(json.dumps(_row(done), ensure_ascii=False, indent=2), highlight=False)


@app.command("list")
def list_(
    identifier: Annotated[str, typer.Option(help="The patient's identifier, SYSTEM|VALUE.")],
    hospital: HospitalOpt,
    by: ByOpt = None,
) -> None:
    """The patient's consents and opt-outs (withdrawn and expired included)."""
    actor = _doctor(hospital, by)
    asked = parse_identifier(identifier)

    async def work(container: Container) -> list[dict[str, Any]]:
        found = await container.consent_service().of_patient(actor, identifier=asked)
        return [_row(r) for r in found.records] if found else []

    console.print(json.dumps(with_container(work), ensure_ascii=False, indent=2), highlight=False)


@app.command("break-glass-report")
def break_glass_report(
    from_: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (Asia/Shanghai).")
    ] = None,
    to: Annotated[str | None, typer.Option(help="The day after the last, YYYY-MM-DD.")] = None,
    format: Annotated[str, typer.Option(help="table or json.")] = "table",
    by: ByOpt = None,
) -> None:
    """Emergency reads beyond consent or opt-out (break-glass), for the security
    administrator to review: who, where, when, which person, and the reason."""
    if format not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    actor = operator(Role.SECURITY_ADMIN, by)
    start, end = report_period(parse_day(from_, "--from"), parse_day(to, "--to"))

    async def work(container: Container) -> list[dict[str, Any]]:
        rows = await container.consent_service().break_glass_report(actor, start, end)
        return [
            {
                "at": r.at.isoformat(),
                "actor": r.actor,
                "hospital": r.hospital,
                "action": r.action,
                "person_id": r.person_id,
                "reason": r.detail.get("break_glass_reason"),
            }
            for r in rows
        ]

    rows = with_container(work)
    if format == "json":
        console.print(json.dumps(rows, ensure_ascii=False, indent=2), highlight=False)
        return
    table = Table(title=f"break-glass reads {start.date()} .. {end.date()} (exclusive)")
    for name in ("at", "actor", "hospital", "action", "person_id", "reason"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            *(str(r[k] or "") for k in ("at", "actor", "hospital", "action", "person_id", "reason"))
        )
    console.print(table)
    console.print(f"{len(rows)} break-glass read(s)")
