"""The check's patient context and protocol over HTTP: birth_date, pregnant and protocol
reach the rules, and the stored check records what was ordered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.storage.tables import recognition_check
from tests import factories as f
from tests.conftest import bearer, certify


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


def body(*items: dict[str, object], **extra: object) -> dict[str, object]:
    return {
        "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
        "ordering_hospital": "H002",
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": list(items),
        **extra,
    }


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_context_and_protocol_reach_the_rules(
    container: Container, api: httpx.AsyncClient
) -> None:
    for scope in ("IMMUNOLOGY", "CT"):
        await certify(container, "H001", scope)
    tsh = f.observation("tsh", "3016-3", 2.1, "mIU/L")
    tsh["identifier"] = [{"system": "urn:lab:H001", "value": "T-1"}]
    (p,) = await container.ingest_service().process_batch(
        [f.inbound(f.bundle([("urn:uuid:patient", f.patient()), ("urn:uuid:o", tsh)]))]
    )
    assert p.outcome.value == "indexed", p.detail
    headers = await bearer(container, "doctor", "H002", "dr.li")
    item = {"system": "http://loinc.org", "code": "3016-3"}

    plain = await api.post("/api/v1/recognition/check", json=body(item), headers=headers)
    assert plain.status_code == 200, plain.text
    assert plain.json()["items"][0]["decision"] == "RECOGNIZABLE"
    pregnant = await api.post(
        "/api/v1/recognition/check", json=body(item, pregnant=True), headers=headers
    )
    assert pregnant.json()["items"][0]["decision"] == "EXCLUDED"

    cta = {"modality": "CT", "body_site": {"system": f.SNOMED, "code": "69536005"}}
    answer = await api.post(
        "/api/v1/recognition/check",
        json=body({**cta, "protocol": "angiography"}, birth_date="1980-01-01"),
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    (out,) = answer.json()["items"]
    assert out["requested"]["protocol"] == "angiography"
    async with container.sessions() as s:
        stored = (
            await s.execute(
                select(recognition_check).where(recognition_check.c.id == answer.json()["check_id"])
            )
        ).one()
    assert stored.items[0]["requested"]["protocol"] == "angiography"

    bad = await api.post(
        "/api/v1/recognition/check", json=body({**cta, "protocol": "Bogus!"}), headers=headers
    )
    assert bad.status_code == 422
