"""The demo's patient-rights part (issue "Patient rights"), through the public API only.

One patient's HIV antibody result from H001 (broker/demo/rights.py): H002's check answers
the item EXCLUDED as if no result existed; H001 records the patient's consent for HIV
results and H002's next check finds it; the consent withdrawn, the next check hides it
again; an H002 doctor then reads it in an emergency with a reason (break-glass: flagged,
counted, on the security administrator's report); finally the patient's access report
lists those reads. Each step says what it expected, so a broken rule shows in the output.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console
from rich.table import Table

from broker.cli import demo_outcomes
from broker.demo.dataset import NATIONAL_ID_SYSTEM
from broker.demo.rights import CATEGORY, HIV_ANTIBODY, ISSUER, LOINC, VIEWER, RightsStory
from broker.domain.actors import ALL_HOSPITALS, Role
from broker.runtime import Stack

SHANGHAI = ZoneInfo("Asia/Shanghai")
BROKEN = "patient rights story broken"
EVIDENCE = "DEMO-CONSENT-HIV-0001"  # a reference to the signed form H001 keeps
REASON = "急诊昏迷，输血前需了解感染情况 unconscious, before transfusion"


async def show(stack: Stack, story: RightsStory, console: Console) -> None:
    ident = f"{NATIONAL_ID_SYSTEM}|{story.national_id}"
    steps = Table("step", "who", "answer", title="Patient rights at work (an HIV test result)")
    issuer = await demo_outcomes.client(stack, Role.DOCTOR, ISSUER, demo_outcomes.doctor(ISSUER))
    viewer = await demo_outcomes.client(stack, Role.DOCTOR, VIEWER, demo_outcomes.doctor(VIEWER))
    try:

        async def check(step: str, expected: str, **extra: Any) -> None:
            body = {
                "patient": {"system": NATIONAL_ID_SYSTEM, "value": story.national_id},
                "ordering_hospital": VIEWER,
                "order_time": datetime.now(SHANGHAI).isoformat(timespec="seconds"),
                "items": [story.item],
                **extra,
            }
            r = await viewer.post("/api/v1/recognition/check", json=body)
            r.raise_for_status()
            (item,) = r.json()["items"]
            cand = item["candidate"]
            found = f"; prior result from {cand['hospital']}" if cand else "; no prior result"
            steps.add_row(
                step,
                f"{VIEWER} doctor, check",
                _mark(item["decision"], expected) + found + f" — {item['explanation']['en']}",
            )

        await check(f"{ISSUER} published the result; {VIEWER} orders the same test", "EXCLUDED")
        r = await issuer.post(
            "/api/v1/patients/consents",
            json={
                "patient": {"system": NATIONAL_ID_SYSTEM, "value": story.national_id},
                "kind": "sensitive",
                "category": CATEGORY,
                "evidence": EVIDENCE,
                "expires": (datetime.now(SHANGHAI) + timedelta(days=30)).isoformat(),
            },
        )
        r.raise_for_status()
        consent = r.json()
        steps.add_row(
            "the patient consents to share HIV results",
            f"{ISSUER} doctor, POST /api/v1/patients/consents",
            f"{consent['status']} until {consent['expires'][:10]}, evidence {EVIDENCE} "
            f"({consent['fhir']})",
        )
        await check("with the consent in force", "RECOGNIZABLE")
        r = await issuer.post(f"/api/v1/patients/consents/{consent['id']}/withdraw")
        r.raise_for_status()
        steps.add_row(
            "the patient withdraws the consent",
            f"{ISSUER} doctor",
            r.json()["status"] + " from the next request on",
        )
        await check("the next check", "EXCLUDED")
        await _break_glass(viewer, ident, steps)
    finally:
        await issuer.aclose()
        await viewer.aclose()
    console.print(steps)
    await _break_glass_report(stack, console)
    await _access_report(stack, ident, console)


async def _break_glass(viewer: httpx.AsyncClient, ident: str, steps: Table) -> None:
    """A plain FHIR search finds nothing; an emergency read with a reason finds and reads it."""
    query = {"subject:identifier": ident, "code": f"{LOINC}|{HIV_ANTIBODY}"}
    plain = (await viewer.get("/fhir/DiagnosticReport", params=query)).json()
    glass = {"X-Purpose-Of-Use": "ETREAT", "X-Break-Glass-Reason": quote(REASON)}
    found = (await viewer.get("/fhir/DiagnosticReport", params=query, headers=glass)).json()
    entries = found.get("entry", [])
    reports = [e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"]
    read = "nothing to read"
    if reports:
        r = await viewer.get(f"/fhir/DiagnosticReport/{reports[0]}", headers=glass)
        read = f"GET /fhir/DiagnosticReport/{reports[0][:8]}… {r.status_code}"
    ok = plain.get("total") == 0 and found.get("total") == 1
    steps.add_row(
        "an emergency: break-glass read with a reason",
        f"{VIEWER} doctor, /fhir (X-Purpose-Of-Use ETREAT + X-Break-Glass-Reason)",
        f"plain search finds {plain.get('total')}, break-glass finds {found.get('total')}; "
        f"{read}; flagged and counted (mrb_break_glass_reads_total)"
        + ("" if ok else f" [red]({BROKEN})[/red]"),
    )


async def _break_glass_report(stack: Stack, console: Console) -> None:
    async with await demo_outcomes.client(
        stack, Role.SECURITY_ADMIN, ALL_HOSPITALS, "security.demo"
    ) as c:
        r = await c.get("/api/v1/audit/break-glass")
        r.raise_for_status()
        rows = [row for row in r.json() if row["action"] != "rate-limit-break-glass"]
    table = Table(
        "time",
        "who",
        "hospital",
        "action",
        "reason",
        title="Break-glass report for the security administrator "
        "(GET /api/v1/audit/break-glass, mrb consent break-glass-report)",
    )
    for row in rows:
        table.add_row(
            _local(row["at"]), row["actor"], row["hospital"] or "-", row["action"], row["reason"]
        )
    console.print(table)
    if not rows:
        console.print(f"[red]no break-glass read on the report ({BROKEN})[/red]")


async def _access_report(stack: Stack, ident: str, console: Console) -> None:
    """The patient's own report, as the platform's patient service asks for it."""
    async with await demo_outcomes.client(stack, Role.AUDIT, ALL_HOSPITALS, "audit.demo") as c:
        r = await c.get("/api/v1/patients/access-report", params={"identifier": ident})
        r.raise_for_status()
        report = r.json()
    table = Table(
        "时间 time",
        "访问者 who",
        "医院 hospital",
        "操作 action",
        "目的 purpose",
        "结果 results",
        title="The patient's access report 本人访问报告 "
        "(mrb patient access-report, GET /api/v1/patients/access-report)",
    )
    for e in report["entries"]:
        results = ", ".join(
            f"{x['hospital']['id']} {x['resource_type']} {x['date']}"
            for x in e["results"]
            if x.get("hospital")
        )
        table.add_row(
            e["at_local"][:19].replace("T", " "),
            e["actor"]["name"],
            e["hospital"]["id"],
            e["action"]["zh"],
            e["purpose"]["zh"],
            results or (e["results_note"] or {}).get("zh", "") or "-",
        )
    console.print(table)
    purposes = [e["purpose"]["code"] for e in report["entries"]]
    if "break-glass" not in purposes or len(purposes) < 4:
        console.print(f"[red]the access report misses reads ({BROKEN})[/red]")


def _mark(decision: str, expected: str) -> str:
    return decision if decision == expected else f"{decision} [red]({BROKEN})[/red]"


def _local(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
