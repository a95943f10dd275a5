"""The admin API: registry, certifications and catalog, over real HTTP and database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from broker.runtime import Stack, running_stack
from broker.settings import Settings
from tests.conftest import api_client


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
        yield stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The platform administrator (the registry and code mappings)."""
    async with api_client(stack, "platform-admin", "*", "sys.zhang") as client:
        yield client


@pytest.fixture
async def qc(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The quality-control office (certifications)."""
    async with api_client(stack, "qc", "*", "qc.wu") as client:
        yield client


HOSPITAL = {
    "id": "H030",
    "name": "泸县人民医院",
    "region": "510521",
    "level": "2",
    "grade": "甲",
    "ownership": "public",
    "alliances": ["LX-YGT"],
}


async def test_register_certify_and_list(api: httpx.AsyncClient, qc: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/admin/hospitals", json=HOSPITAL)).status_code == 201
    cert = {
        "scope": "IMG-CT-CHEST-PLAIN",
        "body": "provincial-imaging-qc",
        "valid_from": "2026-01-01",
        "valid_to": "2026-06-30",
        "reference": "SC-CT-7",
    }
    r = await qc.post("/api/v1/admin/hospitals/H030/certifications", json=cert)
    assert r.status_code == 201, r.text
    (listed,) = (await api.get("/api/v1/admin/hospitals")).json()
    assert listed["alliances"] == ["LX-YGT"] and listed["grade"] == "甲"
    assert listed["certifications"] == [
        {
            "scope": "IMG-CT-CHEST-PLAIN",
            "body": "provincial-imaging-qc",
            "valid_from": "2026-01-01",
            "valid_to": "2026-06-30",
        }
    ]


async def test_duplicate_registration_is_a_conflict_and_put_replaces(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/api/v1/admin/hospitals", json=HOSPITAL)
    again = await api.post("/api/v1/admin/hospitals", json=HOSPITAL)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    changed = {**HOSPITAL, "level": "3", "alliances": []}
    assert (await api.put("/api/v1/admin/hospitals/H030", json=changed)).status_code == 200
    (listed,) = (await api.get("/api/v1/admin/hospitals")).json()
    assert listed["level"] == "3" and listed["alliances"] == []


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"region": "51x"}, "GB/T 2260"),
        ({"grade": "丙"}, "grade must be"),
        ({"ownership": "mixed"}, "ownership must be"),
        ({"timezone": "Mars/Base"}, "unknown time zone"),
    ],
)
async def test_invalid_registrations_are_problems(
    api: httpx.AsyncClient, change: dict[str, str], detail: str
) -> None:
    r = await api.post("/api/v1/admin/hospitals", json={**HOSPITAL, **change})
    assert r.status_code == 422 and detail in r.json()["detail"]


async def test_certification_problems(api: httpx.AsyncClient, qc: httpx.AsyncClient) -> None:
    await api.post("/api/v1/admin/hospitals", json=HOSPITAL)
    base = {
        "scope": "CT",
        "body": "provincial-imaging-qc",
        "valid_from": "2026-06-30",
        "valid_to": "2026-01-01",
    }
    backwards = await qc.post("/api/v1/admin/hospitals/H030/certifications", json=base)
    assert backwards.status_code == 422 and "before" in backwards.json()["detail"]
    unknown = await qc.post(
        "/api/v1/admin/hospitals/H404/certifications",
        json={**base, "valid_from": "2026-01-01", "valid_to": "2026-06-30"},
    )
    assert unknown.status_code == 422 and "not registered" in unknown.json()["detail"]


async def test_catalog_with_regional_overrides(api: httpx.AsyncClient) -> None:
    national = (await api.get("/api/v1/admin/catalog")).json()
    sichuan = (await api.get("/api/v1/admin/catalog", params={"region": "510502"})).json()
    assert len(national["items"]) >= 60 and "LAB-BNP" in national["negative_list"]
    cbc = {i["code"]: i for i in national["items"]}["LAB-CBC"]
    cbc_sc = {i["code"]: i for i in sichuan["items"]}["LAB-CBC"]
    assert cbc["kind"] == "panel" and cbc["components"]
    assert cbc["fees"] != cbc_sc["fees"]  # Sichuan's price list differs


async def test_mapping_worklist_over_http(api: httpx.AsyncClient) -> None:
    await api.post("/api/v1/admin/hospitals", json=HOSPITAL)
    assert (await api.get("/api/v1/admin/mappings/unmapped")).json() == []
    body = {
        "hospital": "H030",
        "system": "urn:mrb:hospital:H030:lab-code",
        "code": "HGB",
        "catalog_code": "LAB-HGB",
    }
    added = await api.post("/api/v1/admin/mappings", json=body)
    assert added.status_code == 201 and added.json()["results_covered"] == 0
    wrong = await api.post("/api/v1/admin/mappings", json={**body, "catalog_code": "LAB-X"})
    assert wrong.status_code == 422 and "not in the catalog" in wrong.json()["detail"]


async def test_admin_of_one_hospital_maps_only_its_codes(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    for hid in ("H001", "H002"):
        registered = await api.post("/api/v1/admin/hospitals", json={**HOSPITAL, "id": hid})
        assert registered.status_code == 201
    async with (
        api_client(stack, "admin", "H001") as h001_admin,
        api_client(stack, "doctor", "H001") as doctor,
    ):
        body = {"hospital": "H002", "system": "urn:x", "code": "1", "catalog_code": "LAB-HGB"}
        refused = await h001_admin.post("/api/v1/admin/mappings", json=body)
        assert refused.status_code == 403
        assert (await doctor.get("/api/v1/admin/mappings/unmapped")).status_code == 403
        assert (await doctor.post("/api/v1/admin/hospitals", json=HOSPITAL)).status_code == 403
