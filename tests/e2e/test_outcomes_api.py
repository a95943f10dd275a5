"""Outcomes, notifications, savings and the regulator report over HTTP, events over Kafka."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from adapters.common.publisher import Publisher, ReceiptWatcher
from broker.kafka.reading import read_topic
from broker.kafka.topics import RECOGNITION
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import api_client, certify, seed_hospitals
from tests.polling import eventually

pytestmark = pytest.mark.slow
CST = timezone(timedelta(hours=8))
HB = {"system": "http://loinc.org", "code": "718-7"}
PLT = {"system": "http://loinc.org", "code": "777-3"}


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    fast = settings.model_copy(update={"event_relay_interval_seconds": 0.2})
    async with running_stack(fast, api=True, worker=True, kafka_needed=True) as s:
        await seed_hospitals(s.container, "H001", hospitals.Hospital("H002", "H002", "510502", "2"))
        await certify(s.container)
        yield s


async def publish(stack: Stack, value: bytes) -> None:
    bootstrap = stack.container.kafka_bootstrap
    assert bootstrap
    message = f.outgoing(value, "H001", b"a")
    trust = f.receipt_trust(stack.container.settings.keys_dir)
    async with ReceiptWatcher(bootstrap, trust=trust) as watcher, Publisher(bootstrap) as pub:
        await pub.publish([message])
        receipts = await watcher.wait_for({message.message_id: "H001"}, timeout=30)
    assert receipts[message.message_id].outcome == "indexed"


async def checked(client: httpx.AsyncClient) -> str:
    body = {
        "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
        "ordering_hospital": "H002",
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": [HB, PLT],
    }
    answer = (await client.post("/api/v1/recognition/check", json=body)).json()
    assert [i["decision"] for i in answer["items"]] == ["RECOGNIZABLE", "RECOGNIZABLE"]
    return str(answer["check_id"])


async def events(stack: Stack, wanted: int) -> list[dict[str, object]]:
    bootstrap = stack.container.kafka_bootstrap
    assert bootstrap

    async def enough() -> list[dict[str, object]]:
        records = await read_topic(bootstrap, RECOGNITION)
        return [json.loads(r.value) for r in records] if len(records) >= wanted else []

    return await eventually(enough, within=20, every=0.2, what=f"{wanted} events on {RECOGNITION}")


async def test_outcome_savings_withdrawal_notice_and_events(stack: Stack) -> None:
    await publish(stack, f.lab_bundle())
    async with api_client(stack, subject="dr-li") as doctor:
        check_id = await checked(doctor)
        body = {
            "items": [
                {"index": 0, "outcome": "accepted"},
                {"index": 1, "outcome": "declined", "reason": "KEY_DECISION"},
            ]
        }
        first = await doctor.post(f"/api/v1/recognition/{check_id}/outcome", json=body)
        assert first.status_code == 200, first.text
        hb, plt = first.json()["items"]
        assert hb["fee_saved"] == "5.40" and hb["replayed"] is False
        assert plt["reason_display"]["zh"].startswith("手术")
        again = await doctor.post(f"/api/v1/recognition/{check_id}/outcome", json=body)
        assert [i["replayed"] for i in again.json()["items"]] == [True, True]

        await publish(
            stack,
            f.lab_bundle(
                status="entered-in-error", last_updated="2026-05-21T10:00:00+08:00", version="2"
            ),
        )
        (notice,) = (await doctor.get("/api/v1/notifications")).json()
        assert notice["kind"] == "withdrawn" and notice["action"] == "reverse"
        assert notice["patient"]["value"] == f.PATIENT_A
        assert notice["result_fhir"].startswith("/fhir/DiagnosticReport/")
        read = await doctor.post(f"/api/v1/notifications/{notice['notice_id']}/read")
        assert read.status_code == 204
        assert (await doctor.get("/api/v1/notifications", params={"unread": True})).json() == []

    async with api_client(stack, "platform-finance", "*") as finance:
        report = (await finance.get("/api/v1/savings", params={"group_by": "hospital"})).json()
        (h002,) = report["groups"]
        assert h002["key"] == "H002" and h002["saved"] == "5.40"
        assert h002["reversed"] == "5.40" and h002["net_saved"] == "0.00"
        assert h002["declines_by_reason"] == {"KEY_DECISION": 1}
        as_csv = await finance.get("/api/v1/savings", params={"group_by": "item", "format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert table[-1]["item"] == "TOTAL" and Decimal(table[-1]["net_saved"]) == 0
        assert (await finance.get("/api/v1/ledger/periods")).json() == []
        regulator = await finance.get(
            "/api/v1/reports/regulator", params={"month": datetime.now(CST).strftime("%Y-%m")}
        )
        by_hospital = {h["hospital"]: h for h in regulator.json()["hospitals"]}
        assert by_hospital["H002"]["recognitions"] == 1 and by_hospital["H002"]["lookups"] == 2
        assert by_hospital["H001"]["eqa_certifications"] == 1
        enabled = by_hospital["H001"]["enabled_elsewhere"]  # H002 recognised H001's result
        assert enabled["its_results_recognised"] == 1 and enabled["saved_for_others"] == "5.40"
        bad = await finance.get("/api/v1/reports/regulator", params={"month": "2026-13"})
        assert bad.status_code == 422 and "YYYY-MM" in bad.json()["detail"]
    async with api_client(stack, "finance", "H001") as source_finance:
        # H001 ordered nothing; its result saved H002 5.40, later reversed.
        ordered = (await source_finance.get("/api/v1/savings")).json()
        assert ordered["side"] == "ordering" and ordered["totals"]["saved"] == "0.00"
        mine = await source_finance.get("/api/v1/savings", params={"side": "source"})
        assert mine.json()["hospital"] == "H001" and mine.json()["side"] == "source"
        assert mine.json()["totals"]["saved"] == "5.40"
        assert mine.json()["totals"]["net_saved"] == "0.00"
        wrong = await source_finance.get("/api/v1/savings", params={"side": "both"})
        assert wrong.status_code == 422

    got = await events(stack, 4)
    assert [e["type"] for e in got if e["check_id"] == check_id] == [
        "check",
        "accepted",
        "declined",
        "reversed",
    ]
    assert f.PATIENT_A not in json.dumps(got)


async def test_authentication_and_scope_are_enforced(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as anonymous:
        r = await anonymous.get("/api/v1/savings")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        forged = await anonymous.get(
            "/api/v1/notifications", headers={"Authorization": "Bearer not-a-token"}
        )
        assert forged.status_code == 401 and forged.json()["title"] == "Invalid token"
    async with api_client(stack, "doctor", "H001") as other_doctor:
        refused = await other_doctor.post(
            "/api/v1/recognition/check",
            json={
                "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
                "ordering_hospital": "H002",
                "order_time": "2026-05-20T09:00:00+08:00",
                "items": [HB],
            },
        )
        assert refused.status_code == 403
        assert (await other_doctor.get("/api/v1/savings")).status_code == 403
    async with api_client(stack, "finance", "H001") as local_finance:
        assert (await local_finance.get("/api/v1/savings")).status_code == 200
        other = await local_finance.get("/api/v1/savings", params={"hospital": "H002"})
        assert other.status_code == 403
        closing = await local_finance.post("/api/v1/ledger/periods/2026-05/close")
        assert closing.status_code == 403
        city = await local_finance.get("/api/v1/reports/regulator", params={"month": "2026-05"})
        assert city.status_code == 403
    async with api_client(stack, "platform-admin", "*", "sys.zhang") as admin:
        closed = await admin.post("/api/v1/ledger/periods/2026-05/close")
        assert closed.json() == {"period": "2026-05", "closed": True, "already_closed": False}
        reasons = (await admin.get("/api/v1/recognition/decline-reasons")).json()
        assert {r["code"] for r in reasons} >= {"CONDITION_CHANGED", "OTHER"}
        assert next(r for r in reasons if r["code"] == "OTHER")["needs_text"] is True
