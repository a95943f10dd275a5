"""Adapter -> Kafka (Tansu) -> ingest worker -> database -> HTTP answer, all real."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from adapters.common.publisher import Publisher, ReceiptWatcher
from broker.domain.registry import Certification, CertifyingBody
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import (
    DB_KINDS,
    Templates,
    adapter_env,
    api_client,
    migrated_db,
    settings_for,
)

pytestmark = pytest.mark.slow


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[Stack]:
    """API, worker and embedded Kafka, with H001 and H002 registered and H001 certified."""
    async with running_stack(settings, api=True, worker=True, kafka_needed=True) as s:
        async with s.container.sessions() as session, session.begin():
            for hid in ("H001", "H002"):
                await hospitals.add(session, hospitals.Hospital(hid, hid, "510502", "3"))
                await hospitals.add_key(session, hid, f.key_id(hid), f.public_b64(hid))
            for group in ("HEMATOLOGY", "CT"):
                await hospitals.certify(
                    session,
                    Certification(
                        "H001",
                        group,
                        CertifyingBody.PROVINCIAL_EQA,
                        date(2026, 1, 1),
                        date(2026, 12, 31),
                    ),
                    reference=None,
                )
        yield s


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with _running(settings) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DB_KINDS)
async def shared_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    db_templates: Templates,
) -> AsyncIterator[Stack]:
    """The same stack, once per database kind for TestProblems: requests refused before
    they change anything, so they need no fresh stack each (2.5 s to start one)."""
    directory = tmp_path_factory.mktemp("problems")
    async with (
        migrated_db(request.param, directory, db_templates) as made,
        _running(settings_for(made, directory)) as s,
    ):
        yield s


def check_body(items: list[dict[str, object]], hospital: str = "H002") -> dict[str, object]:
    return {
        "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
        "ordering_hospital": hospital,
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": items,
    }


async def test_results_from_two_hospitals_answer_a_check(stack: Stack) -> None:
    bootstrap = stack.container.kafka_bootstrap
    assert bootstrap is not None
    messages = [
        f.outgoing(f.lab_bundle(), "H001", b"a"),
        f.outgoing(f.imaging_bundle(), "H001", b"a"),
        f.outgoing(
            f.lab_bundle(
                accession="H2-1",
                hb=12.1,
                effective="2026-05-19T08:00:00+08:00",
                pat=f.patient(mrn="B-7", pid="x"),
            ),
            "H002",
            b"b",
        ),
    ]
    trust = f.receipt_trust(stack.container.settings.keys_dir)
    async with ReceiptWatcher(bootstrap, trust=trust) as watcher, Publisher(bootstrap) as pub:
        await pub.publish(messages)
        wanted = {m.message_id: m.hospital for m in messages}
        receipts = await watcher.wait_for(wanted, timeout=30)
    assert {r.outcome for r in receipts.values()} == {"indexed"}

    body = check_body(
        [
            {"system": "http://loinc.org", "code": "718-7"},
            {"modality": "CT", "body_site": {"system": f.SNOMED, "code": "51185008"}},
            {"system": "http://loinc.org", "code": "4548-4"},
        ]
    )
    async with api_client(stack) as client:
        response = await client.post("/api/v1/recognition/check", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["check_id"]
    hb, ct, hba1c = answer["items"]
    # H002 holds no haematology certification; H001 does (provincial EQA -> 川HR).
    assert hb["decision"] == "RECOGNIZABLE" and hb["catalog_code"] == "LAB-HGB"
    assert hb["candidate"]["hospital"] == "H001" and hb["candidate"]["recognition_mark"] == "川HR"
    assert [(o["hospital"], o["decision"]) for o in hb["other_results"]] == [
        ("H002", "NOT_QC_CERTIFIED")
    ]
    assert hb["valid_until"] == "2026-05-25" and hb["fee_saved"] is not None
    # H002's newer (uncertified) haemoglobin is named beside the candidate: the doctor decides.
    assert (hb["candidate"]["value"], hb["candidate"]["unit"]) == ("13.2", "g/dL")
    (newer,) = hb["warnings"]
    assert {k: newer[k] for k in ("kind", "hospital", "status", "value", "unit", "flags")} == {
        "kind": "newer-result",
        "hospital": "H002",
        "status": "final",
        "value": "12.1",
        "unit": "g/dL",
        "flags": [],
    }
    assert newer["fhir"].startswith("/fhir/") and newer["effective"].startswith("2026-05-1")
    assert "H002" in newer["message"]["zh"] and "newer" in newer["message"]["en"]
    assert "2026-05-18" in hb["explanation"]["en"] and "2026-05-18" in hb["explanation"]["zh"]
    assert ct["decision"] == "RECOGNIZABLE" and ct["candidate"]["hospital"] == "H001"
    assert ct["candidate"]["fhir"].startswith("/fhir/ImagingStudy/")
    assert hba1c["decision"] == "NO_PRIOR_RESULT" and hba1c["candidate"] is None
    # The links open the result holding the item: the CBC report (a 404 at
    # /fhir/Observation/<report id> before), the study under its own id.
    async with api_client(stack) as client:
        for link in (hb["candidate"]["fhir"], newer["fhir"], ct["candidate"]["fhir"]):
            opened = await client.get(link)
            assert opened.status_code == 200, (link, opened.text)
            resource = opened.json()
            assert link == f"/fhir/{resource['resourceType']}/{resource['id']}"
        report = (await client.get(hb["candidate"]["fhir"])).json()
    assert report["resourceType"] == "DiagnosticReport" and report["result"]


async def test_the_fhir_adapter_cli_publishes_files_and_reports_receipts(
    stack: Stack, tmp_path: Path
) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / "cbc.json").write_bytes(f.lab_bundle())
    (folder / "batch.ndjson").write_bytes(
        f.lab_bundle(accession="N-1").replace(b"\n", b"") + b"\n" + b'{"hb": 1}\n'
    )
    # The hospital side: its own data dir and signing key, registered at the broker.
    env = await adapter_env(stack, tmp_path)
    # The worker runs in this event loop: the CLI must run beside it, not block it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "adapter",
        "fhir",
        "--hospital",
        "H001",
        "--timeout",
        "30",
        "--no-validate",  # send as is: the broker's own refusal is what is tested here
        str(folder),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    raw, _ = await asyncio.wait_for(proc.communicate(), 60)
    out = raw.decode()
    assert proc.returncode == 1, out  # one message was rejected
    assert "queued 3 message(s) as H001; sent 3, resent 0" in out
    assert "indexed: 2" in out and "rejected: 1" in out
    assert "NOT_FHIR" in out and "batch.ndjson:2" in out
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "adapter",
        "status",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    listing = (await asyncio.wait_for(status.communicate(), 30))[0].decode()
    assert "pending: 0, delivered: 2, rejected: 1" in listing
    assert "NOT_FHIR" in listing and "batch.ndjson:2" in listing


@pytest.mark.asyncio(loop_scope="module")
class TestProblems:
    async def test_invalid_request_is_a_problem_body(self, shared_stack: Stack) -> None:
        async with api_client(shared_stack) as client:
            r = await client.post(
                "/api/v1/recognition/check",
                json={**check_body([]), "order_time": "2026-05-20T09:00:00"},
            )
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 422 and problem["title"] == "Invalid request"
        assert f.PATIENT_A not in r.text  # the identifier is never echoed

    async def test_item_needs_code_or_modality(self, shared_stack: Stack) -> None:
        async with api_client(shared_stack) as client:
            r = await client.post(
                "/api/v1/recognition/check", json=check_body([{"system": "http://loinc.org"}])
            )
        assert r.status_code == 422
        assert "system and code" in r.json()["detail"]

    async def test_bad_check_digit_is_refused(self, shared_stack: Stack) -> None:
        body = check_body([{"system": "http://loinc.org", "code": "718-7"}])
        body["patient"] = {"system": f.NATIONAL, "value": "110101199003071234"}
        async with api_client(shared_stack) as client:
            r = await client.post("/api/v1/recognition/check", json=body)
        assert r.status_code == 422
        assert "check digit" in r.json()["detail"]

    async def test_unknown_ordering_hospital(self, shared_stack: Stack) -> None:
        """A doctor's token outlives its hospital's registration (tokens are issued only
        for registered hospitals)."""
        from sqlalchemy import delete

        from broker.storage.tables import hospital

        body = check_body([{"system": "http://loinc.org", "code": "718-7"}], hospital="H404")
        async with shared_stack.container.sessions() as s, s.begin():
            await hospitals.add(s, hospitals.Hospital("H404", "gone", "510502", "1"))
        async with api_client(shared_stack, hospital="H404") as client:
            async with shared_stack.container.sessions() as s, s.begin():
                await s.execute(delete(hospital).where(hospital.c.id == "H404"))
            r = await client.post("/api/v1/recognition/check", json=body)
        assert r.status_code == 404 and r.json()["title"] == "Unknown ordering hospital"

    async def test_malformed_json_body(self, shared_stack: Stack) -> None:
        async with api_client(shared_stack) as client:
            r = await client.post(
                "/api/v1/recognition/check",
                content=b"{nope",
                headers={"content-type": "application/json"},
            )
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"

    async def test_unknown_path_is_a_problem_too(self, shared_stack: Stack) -> None:
        async with api_client(shared_stack) as client:
            r = await client.get("/api/v1/nothing")
        assert r.status_code == 404 and r.json()["status"] == 404


async def test_operations_endpoints(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url) as client:  # no token needed
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready" and ready["checks"]["database"] == "ok"
        assert (await client.get("/metrics")).status_code == 404  # not on the API port
        assert stack.metrics_url is not None
        metrics = (await client.get(stack.metrics_url)).text
        assert "mrb_results_rejected_total" in metrics and "mrb_consumer_lag" in metrics
        openapi = (await client.get("/openapi.json")).json()
        assert "/api/v1/recognition/check" in openapi["paths"]
        assert (await client.get("/docs")).status_code == 200


async def test_every_check_is_stored_and_audited(stack: Stack) -> None:
    from sqlalchemy import select

    from broker.storage.tables import audit_event, recognition_check

    body = check_body([{"system": "http://loinc.org", "code": "718-7"}])
    async with api_client(stack) as client:
        check_id = (await client.post("/api/v1/recognition/check", json=body)).json()["check_id"]
    async with stack.container.sessions() as s:
        stored = (await s.execute(select(recognition_check))).one()._mapping
        audit = (
            (await s.execute(select(audit_event).where(audit_event.c.action != "token.issue")))
            .one()
            ._mapping
        )
    assert stored["id"] == check_id and stored["ordering_hospital"] == "H002"
    assert audit["action"] == "recognition-check" and audit["hospital_id"] == "H002"
    assert audit["patient_pseudonym"] and f.PATIENT_A not in json.dumps(dict(audit), default=str)


async def test_a_kafka_outage_does_not_stop_recognition_checks(settings: Settings) -> None:
    from tests.conftest import free_port

    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    async with running_stack(down, api=True, worker=True, kafka_needed=False) as stack:
        async with stack.container.sessions() as session, session.begin():
            await hospitals.add(session, hospitals.Hospital("H002", "H002", "510502", "3"))
        async with api_client(stack) as client:
            body = check_body([{"system": "http://loinc.org", "code": "718-7"}])
            answer = await client.post("/api/v1/recognition/check", json=body)
            assert answer.status_code == 200
            assert answer.json()["items"][0]["decision"] == "NO_PRIOR_RESULT"
            ready = (await client.get("/readyz")).json()
            assert ready["status"] == "ready"
            assert ready["checks"]["ingest_worker_0"]["kafka"] == "unavailable"
        assert all(not t.done() for t in stack.tasks)  # the worker keeps retrying
