"""`mrb adapter fhir`: validation before sending, and polling a hospital FHIR server.

The hospital's FHIR server is outside mrb, so a small stand-in serves DiagnosticReport
searches the way HAPI and others do (searchset, _include, _lastUpdated, next links).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import func, select

from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import result
from tests import factories as f
from tests.conftest import adapter_env, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=True, kafka_needed=True) as s:
        async with s.container.sessions() as session, session.begin():
            await hospitals.add(session, hospitals.Hospital("H001", "H001", "510502", "3"))
        yield s


def report_resources(accession: str, updated: str) -> list[dict[str, Any]]:
    """A hospital server's own resources (with ids and relative references)."""
    doc = json.loads(f.lab_bundle(accession=accession, last_updated=updated))
    resources = [e["resource"] for e in doc["entry"]]
    patient, report, *observations = resources
    patient["id"] = "pat-1"
    report["subject"] = {"reference": "Patient/pat-1"}
    for obs in observations:
        obs["id"] = f"{accession}-{obs['id']}"
        obs["subject"] = {"reference": "Patient/pat-1"}
    report["result"] = [{"reference": f"Observation/{o['id']}"} for o in observations]
    report["id"] = accession
    return [patient, report, *observations]


class HospitalFhirServer:
    def __init__(self) -> None:
        self.reports: list[list[dict[str, Any]]] = []
        self.app = FastAPI()
        self.app.get("/fhir/DiagnosticReport")(self.search)

    async def search(self, request: Request) -> dict[str, Any]:
        q = request.query_params
        since = (q.get("_lastUpdated") or "ge").removeprefix("ge")
        count, offset = int(q.get("_count", "50")), int(q.get("_offset", "0"))
        matches = sorted(
            (r for r in self.reports if r[1]["meta"]["lastUpdated"] >= since),
            key=lambda r: r[1]["meta"]["lastUpdated"],
        )
        page = matches[offset : offset + count]
        entries: list[dict[str, Any]] = []
        for patient, report, *observations in page:
            entries.append({"resource": report, "search": {"mode": "match"}})
            entries += [
                {"resource": r, "search": {"mode": "include"}} for r in (patient, *observations)
            ]
        links = []
        if offset + count < len(matches):
            nxt = str(request.url.include_query_params(_offset=offset + count))
            links.append({"relation": "next", "url": nxt})
        return {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                "link": links, "entry": entries}  # fmt: skip


@pytest.fixture
async def hospital_fhir() -> AsyncIterator[tuple[HospitalFhirServer, str]]:
    fake = HospitalFhirServer()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield fake, f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    await task


async def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", "adapter", "fhir", "--hospital", "H001",
        "--timeout", "30", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
    assert proc.returncode is not None
    return proc.returncode, out


async def indexed(stack: Stack) -> int:
    async with stack.container.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(result))).scalar_one())


async def test_invalid_fhir_is_refused_before_sending(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "good.json").write_bytes(f.lab_bundle())
    bad = json.loads(f.lab_bundle(accession="BAD"))
    bad["entry"][1]["resource"]["effectiveDateTime"] = "18 May 2026"  # not a FHIR dateTime
    (folder / "bad.json").write_text(json.dumps(bad))
    code, out = await run(await adapter_env(stack, tmp_path), str(folder))
    assert code == 1, out
    assert "INVALID_FHIR" in out and "bad.json" in out
    assert "queued 1 message(s)" in out and "indexed: 1" in out
    assert await indexed(stack) == 1


async def test_polling_a_hospital_fhir_server_resumes_where_it_stopped(
    stack: Stack, tmp_path: Path, hospital_fhir: tuple[HospitalFhirServer, str]
) -> None:
    fake, base = hospital_fhir
    for i in range(3):
        fake.reports.append(report_resources(f"P-{i}", f"2026-05-18T1{i}:00:00+08:00"))
    env = await adapter_env(stack, tmp_path)
    code, out = await run(env, "--poll", base)
    assert code == 0, out
    assert "3 report(s), 3 queued, 0 refused" in out and "indexed: 3" in out
    assert await indexed(stack) == 3

    fake.reports.append(report_resources("P-9", "2026-05-19T09:00:00+08:00"))
    code, out = await run(env, "--poll", base)
    assert code == 0, out
    assert "since 2026-05-18T12:00:00+08:00" in out  # the cursor survived the restart
    assert "indexed: 1" in out  # the new report; the boundary one is a duplicate
    assert await indexed(stack) == 4
