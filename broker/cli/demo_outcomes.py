"""The demo's second half: doctors' outcomes, a withdrawal after recognition, the reports.

Everything goes through the public interfaces: the HTTP API with bearer tokens, and a
hospital adapter's signed, outboxed message for the withdrawal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

from adapters.common.delivery import deliver
from adapters.common.envelope import OutgoingMessage
from adapters.common.outbox import Outbox
from adapters.common.receipts import RECEIPT_KEYS_FILE, ReceiptTrust
from broker.domain.actors import ALL_HOSPITALS, Role
from broker.domain.ledger import DeclineReason
from broker.runtime import Stack
from broker.security.keys import load_or_create_key
from broker.storage import demo_data

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Doctors decline about one recognisable item in four, for the regulation's reasons.
DECLINES = [
    (DeclineReason.CONDITION_CHANGED, None),
    (DeclineReason.KEY_DECISION, None),
    (DeclineReason.PATIENT_REQUEST, None),
    (DeclineReason.OTHER, "外院报告单位与本院不一致，需复查"),
    (DeclineReason.RAPID_CHANGE, None),
]


@dataclass(frozen=True)
class DemoCheck:
    check_id: str
    hospital: str
    items: list[dict[str, Any]]


DEMO_ISSUER = "mrb demo"


def doctor(hospital: str) -> str:
    return f"dr.demo@{hospital}"


async def client(stack: Stack, role: Role, hospital: str, subject: str) -> httpx.AsyncClient:
    """An API client with a token the demo issues (the embedded set-up holds the issuer key)."""
    token = (await stack.container.issue_token(subject, role, hospital, by=DEMO_ISSUER)).token
    return httpx.AsyncClient(
        base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


async def record_outcomes(stack: Stack, checks: list[DemoCheck]) -> list[tuple[DemoCheck, int]]:
    """Doctors accept or decline every recognisable item; returns the accepted ones."""
    accepted: list[tuple[DemoCheck, int]] = []
    n = 0
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for check in checks:
            if check.hospital not in clients:
                clients[check.hospital] = await client(
                    stack, Role.DOCTOR, check.hospital, doctor(check.hospital)
                )
            body = []
            for i, item in enumerate(check.items):
                if item["decision"] != "RECOGNIZABLE":
                    continue
                n += 1
                if n % 4:
                    body.append({"index": i, "outcome": "accepted"})
                    accepted.append((check, i))
                else:
                    reason, text = DECLINES[(n // 4) % len(DECLINES)]
                    body.append(
                        {"index": i, "outcome": "declined", "reason": reason, "reason_text": text}
                    )
            if body:
                r = await clients[check.hospital].post(
                    f"/api/v1/recognition/{check.check_id}/outcome", json={"items": body}
                )
                r.raise_for_status()
    finally:
        for c in clients.values():
            await c.aclose()
    return accepted


async def withdraw_one(
    stack: Stack,
    accepted: list[tuple[DemoCheck, int]],
    signers: dict[str, tuple[str, Ed25519PrivateKey]],
    console: Console,
) -> DemoCheck | None:
    """The issuing hospital withdraws one recognised lab report (entered-in-error)."""

    def cross_hospital_lab(pair: tuple[DemoCheck, int]) -> bool:
        cand = pair[0].items[pair[1]].get("candidate") or {}
        return (
            "DiagnosticReport" in str(cand.get("fhir"))
            and cand.get("hospital") in signers
            and cand.get("hospital") != pair[0].hospital
        )

    chosen = next(filter(cross_hospital_lab, accepted), None)
    if chosen is None:
        return None
    check, index = chosen
    item = check.items[index]
    cand = item["candidate"]
    value = await _current_payload(stack, cand["result_id"])
    withdrawn = _entered_in_error(value)
    hospital = cand["hospital"]
    key_id, private = signers[hospital]
    message = OutgoingMessage(hospital, withdrawn, b"demo-withdrawal").signed(key_id, private)
    settings = stack.container.settings
    box = Outbox(
        settings.data_dir / "demo-outbox.db", load_or_create_key(settings.keys_dir / "outbox.key")
    )
    try:
        box.add([(message, "demo: a recognised report withdrawn")])
        bootstrap = stack.container.kafka_bootstrap
        assert bootstrap is not None
        trust = ReceiptTrust.configured(file=settings.keys_dir / RECEIPT_KEYS_FILE)
        report = await deliver(
            box, bootstrap, trust=trust, options=settings.kafka_options(), timeout=60
        )
    finally:
        box.close()
    receipt = report.receipts.get(message.message_id)
    console.print(
        f"\n[bold]Safety[/bold]: {hospital} withdrew the report behind one recognised item "
        f"({item['name']['en']}, checked at {check.hospital}); receipt: "
        f"{receipt.outcome if receipt else 'none'}"
    )
    return check


async def _current_payload(stack: Stack, result_id: str) -> bytes:
    async with stack.container.sessions() as s:
        sealed, message_id = await demo_data.current_payload(s, result_id)
    return stack.container.cipher.open(sealed, associated=message_id.encode())


def _entered_in_error(value: bytes) -> bytes:
    """The same bundle, every result resource marked entered-in-error, as a newer version."""
    doc = json.loads(value)
    now = datetime.now(SHANGHAI).isoformat(timespec="seconds")
    for entry in doc.get("entry", []):
        res = entry.get("resource", {})
        if res.get("resourceType") in ("DiagnosticReport", "Observation"):
            res["status"] = "entered-in-error"
            meta = res.setdefault("meta", {})
            meta["lastUpdated"] = now
            meta["versionId"] = str(int(meta.get("versionId", "1")) + 1)
    return json.dumps(doc, ensure_ascii=False).encode()


async def show_notice(stack: Stack, check: DemoCheck, console: Console) -> None:
    async with await client(stack, Role.DOCTOR, check.hospital, doctor(check.hospital)) as c:
        notices = (await c.get("/api/v1/notifications")).json()
    for n in notices:
        console.print(
            f"notice to {doctor(check.hospital)} ({n['action']}): {n['message']['zh']}\n"
            f"  {n['message']['en']}"
        )


async def show_reports(stack: Stack, console: Console) -> None:
    """The finance office's savings report and the regulator's monthly return."""
    month = datetime.now(SHANGHAI).strftime("%Y-%m")
    async with await client(stack, Role.PLATFORM_FINANCE, ALL_HOSPITALS, "finance.demo") as c:
        savings = (await c.get("/api/v1/savings", params={"group_by": "hospital"})).json()
        categories = (await c.get("/api/v1/savings", params={"group_by": "category"})).json()
        regulator = (await c.get("/api/v1/reports/regulator", params={"month": month})).json()
    table = Table(
        "ordering hospital",
        "recognitions",
        "saved ¥",
        "reversals",
        "reversed ¥",
        "net ¥",
        "declined",
        title="Savings report (GET /api/v1/savings?group_by=hospital, from the ledger)",
    )
    for g in [*savings["groups"], {"key": "TOTAL", **savings["totals"]}]:
        table.add_row(
            g["key"],
            str(g["recognitions"]),
            g["saved"],
            str(g["reversals"]),
            g["reversed"],
            g["net_saved"],
            str(g["declined"]),
        )
    console.print(table)
    console.print(
        "by category: "
        + ", ".join(f"{g['key']} ¥{g['net_saved']}" for g in categories["groups"])
        + "; declines by reason: "
        + ", ".join(f"{k} {v}" for k, v in savings["totals"]["declines_by_reason"].items())
    )
    reg = Table(
        "hospital",
        "level/grade",
        "ownership",
        "look-ups",
        "cross-hospital",
        "recognitions",
        "net ¥",
        "EQA certs",
        title=f"Regulator report {month} (mrb report regulator --month {month})",
    )
    for h in regulator["hospitals"]:
        reg.add_row(
            h["hospital"],
            f"{h['level']}{h['grade'] or ''}",
            h["ownership"],
            str(h["lookups"]),
            str(h["cross_hospital_lookups"]),
            str(h["recognitions"]),
            h["net_saved"],
            str(h["eqa_certifications"]),
        )
    console.print(reg)
