"""Rate limits (broker/services/rate_limits.py, broker/api/limits.py) over real storage:
the database (SQLite and PostgreSQL) and the Redis server on 127.0.0.1:6379.

An attacker with one doctor token walking sequential resident IDs meets 429 at the
distinct-patient limit; the same doctor re-checking a patient does not. Counters are
shared by API processes: two apps on one database (or one Redis) count together. An
emergency is never refused: it passes, is audited as break-glass and is counted.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import select

from broker.api.app import create_app
from broker.api.deps import session_cookie
from broker.bootstrap import Container
from broker.services.rate_limits import RateLimiter
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.rate_limit_tables import rate_limit_patient
from broker.storage.rate_limits import DatabasePatientCounter, DatabaseStorage
from broker.storage.tables import audit_event
from tests import factories
from tests import factories as f
from tests.conftest import bearer

CHECK = "/api/v1/recognition/check"
REDIS_URL = os.environ.get("MRB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def resident_id(n: int) -> str:
    """The n-th of a run of sequential resident IDs (GB 11643 check character)."""
    body = f"11010519900101{n:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True)) % 11]


def check_body(patient: str, *, emergency: bool = False) -> dict[str, Any]:
    return {
        "patient": {"system": f.NATIONAL, "value": patient},
        "ordering_hospital": "H002",
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": [{"system": "http://loinc.org", "code": "718-7"}],
        "emergency": emergency,
    }


def limited(settings: Settings, **limits: Any) -> Settings:
    values = {
        "rate_limit_per_minute": 1000,
        "rate_limit_per_address_per_minute": 1000,
        "distinct_patients_per_hour": 1000,
        **limits,
    }
    return settings.model_copy(update=values)


@dataclass
class Api:
    container: Container
    http: httpx.AsyncClient


@pytest.fixture
async def build(settings: Settings) -> AsyncIterator[Any]:
    """Builds API processes (a container and an app each) on the test's database."""
    made: list[Api] = []

    async def make(**limits: Any) -> Api:
        container = Container.build(limited(settings, **limits))
        if not made:  # the hospitals, once per database
            async with container.sessions() as s, s.begin():
                for hid in ("H001", "H002"):
                    await hospitals.add(s, hospitals.Hospital(hid, hid, "510502", "3"))
                    await hospitals.add_key(
                        s, hid, factories.key_id(hid), factories.public_b64(hid)
                    )
        app: FastAPI = create_app(container)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mrb")
        api = Api(container, http)
        made.append(api)
        return api

    yield make
    for api in made:
        await api.http.aclose()
        await api.container.close()


SETTING = {
    "token": "MRB_RATE_LIMIT_PER_MINUTE",
    "address": "MRB_RATE_LIMIT_PER_ADDRESS_PER_MINUTE",
    "patients": "MRB_DISTINCT_PATIENTS_PER_HOUR",
}


async def away_from_a_minute_boundary() -> None:
    """Request limits count in minute windows weighted across the boundary (limits'
    sliding-window counter): a test that crosses one may see one request more admitted.
    Start where the next 15 s stay inside one minute."""
    second = time.time() % 60
    if second > 45:
        await asyncio.sleep(60.5 - second)


def assert_429(response: httpx.Response, limit: str) -> None:
    """429 with a problem body naming the limit's setting, and Retry-After."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert SETTING[limit] in body["detail"]


async def test_sequential_resident_ids_hit_429_at_the_distinct_patient_limit(build: Any) -> None:
    api = await build(distinct_patients_per_hour=5)
    doctor = await bearer(api.container, subject="dr.enumerator")
    for n in range(5):
        r = await api.http.post(CHECK, json=check_body(resident_id(n)), headers=doctor)
        assert r.status_code == 200, r.text
    refused = await api.http.post(CHECK, json=check_body(resident_id(5)), headers=doctor)
    assert_429(refused, "patients")
    assert 3000 < int(refused.headers["retry-after"]) <= 3600
    for n in (0, 4, 0):  # patients already looked up stay available
        again = await api.http.post(CHECK, json=check_body(resident_id(n)), headers=doctor)
        assert again.status_code == 200, again.text
    other = await bearer(api.container, subject="dr.other")  # another doctor is unaffected
    assert (await api.http.post(CHECK, json=check_body(resident_id(9)), headers=other)).is_success
    async with api.container.sessions() as s:
        stored = [tuple(r) for r in await s.execute(select(rate_limit_patient))]
    assert len(stored) == 6  # five for one doctor, one for the other
    assert not any(resident_id(n) in str(stored) for n in range(10))  # pseudonyms only


async def test_requests_per_token_are_limited_and_other_tokens_are_not(build: Any) -> None:
    await away_from_a_minute_boundary()
    api = await build(rate_limit_per_minute=3)
    doctor = await bearer(api.container, subject="dr.busy")
    reasons = "/api/v1/recognition/decline-reasons"
    for _ in range(3):
        assert (await api.http.get(reasons, headers=doctor)).status_code == 200
    refused = await api.http.get(reasons, headers=doctor)
    assert_429(refused, "token")
    assert refused.json()["limit"] == "token"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # A second token of the same person shares the count; another person has their own.
    same_person = await bearer(api.container, subject="dr.busy")
    assert (await api.http.get(reasons, headers=same_person)).status_code == 429
    colleague = await bearer(api.container, subject="dr.calm")
    assert (await api.http.get(reasons, headers=colleague)).status_code == 200
    # Forged tokens name nobody: they are not counted against a person, and get 401.
    assert (
        await api.http.get(reasons, headers={"Authorization": "Bearer not.a.token"})
    ).status_code == 401


async def test_requests_of_a_web_session_are_limited_per_session(build: Any) -> None:
    """A page's requests carry a session cookie, no token: they count against the session
    (before the route reads it, so even a forged cookie is counted, against itself)."""
    await away_from_a_minute_boundary()
    api = await build(rate_limit_per_minute=3)
    reasons = "/api/v1/recognition/decline-reasons"
    cookie = session_cookie(api.container.settings)
    one, other = {"cookie": f"{cookie}=session-one"}, {"cookie": f"{cookie}=session-two"}
    for _ in range(3):
        assert (await api.http.get(reasons, headers=one)).status_code == 401  # no such session
    assert_429(await api.http.get(reasons, headers=one), "token")
    assert (await api.http.get(reasons, headers=other)).status_code == 401  # its own count


async def test_requests_per_address_are_limited_before_authentication(build: Any) -> None:
    await away_from_a_minute_boundary()
    api = await build(rate_limit_per_address_per_minute=2)
    assert (await api.http.get("/api/v1/admin/hospitals")).status_code == 401
    assert (await api.http.get("/api/v1/admin/hospitals")).status_code == 401
    assert_429(await api.http.get("/api/v1/admin/hospitals"), "address")
    assert (await api.http.get("/healthz")).status_code == 200  # probes are not counted


async def test_two_api_processes_on_one_database_share_the_counters(build: Any) -> None:
    await away_from_a_minute_boundary()
    first = await build(distinct_patients_per_hour=3, rate_limit_per_minute=6)
    second = await build(distinct_patients_per_hour=3, rate_limit_per_minute=6)
    doctor = await bearer(first.container, subject="dr.roaming")
    for api, n in ((first, 0), (second, 1), (first, 2)):
        r = await api.http.post(CHECK, json=check_body(resident_id(n)), headers=doctor)
        assert r.status_code == 200, r.text
    assert_429(
        await second.http.post(CHECK, json=check_body(resident_id(3)), headers=doctor), "patients"
    )
    assert (
        await second.http.post(CHECK, json=check_body(resident_id(0)), headers=doctor)
    ).status_code == 200  # looked up through the other process: not new
    # Five requests so far across both processes; the sixth passes, the seventh is over.
    reasons = "/api/v1/recognition/decline-reasons"
    assert (await first.http.get(reasons, headers=doctor)).status_code == 200
    assert_429(await second.http.get(reasons, headers=doctor), "token")


async def test_an_emergency_over_the_limit_passes_audited_as_break_glass(build: Any) -> None:
    await away_from_a_minute_boundary()
    api = await build(distinct_patients_per_hour=1, rate_limit_per_minute=3)
    doctor = await bearer(api.container, subject="dr.er")

    def glass(limit: str) -> float:
        labels = {"channel": "api", "limit": limit}
        return REGISTRY.get_sample_value("mrb_break_glass_total", labels) or 0.0

    before = glass("patients")
    assert (await api.http.post(CHECK, json=check_body(resident_id(0)), headers=doctor)).is_success
    assert_429(
        await api.http.post(CHECK, json=check_body(resident_id(1)), headers=doctor), "patients"
    )
    urgent = await api.http.post(
        CHECK, json=check_body(resident_id(1), emergency=True), headers=doctor
    )
    assert urgent.status_code == 200, urgent.text
    assert glass("patients") == before + 1
    # Over the per-token limit too (3 requests made): an emergency still passes.
    token_before = glass("token")
    assert_429(await api.http.post(CHECK, json=check_body(resident_id(0)), headers=doctor), "token")
    urgent = await api.http.post(
        CHECK, json=check_body(resident_id(0), emergency=True), headers=doctor
    )
    assert urgent.status_code == 200, urgent.text
    assert glass("token") == token_before + 1
    async with api.container.sessions() as s:
        rows = (
            await s.execute(select(audit_event).where(audit_event.c.purpose == "break-glass"))
        ).all()
    assert [(r.action, r.actor, r.detail["limit"]) for r in rows] == [
        ("rate-limit-break-glass", "dr.er", "patients"),
        ("rate-limit-break-glass", "dr.er", "token"),
    ]
    assert rows[0].patient_pseudonym and resident_id(1) not in str(rows[0].detail)


async def test_the_database_window_admits_exactly_the_limit_across_processes(
    settings: Settings,
) -> None:
    await away_from_a_minute_boundary()
    first, second = Container.build(settings), Container.build(settings)
    try:
        limiters = [
            RateLimiter(
                DatabaseStorage(c.engine),
                DatabasePatientCounter(c.engine),
                per_token=10,
                per_address=0,
                patients_per_hour=0,
            )
            for c in (first, second)
        ]
        person = f"H002/{uuid.uuid4()}"
        answers = await asyncio.gather(*(limiters[i % 2].token(person) for i in range(16)))
        assert sum(a is None for a in answers) == 10
        assert {a.limit for a in answers if a is not None} == {"token"}
    finally:
        await first.close()
        await second.close()


async def test_a_patient_leaves_the_window_after_it_ends(settings: Settings) -> None:
    container = Container.build(settings)
    try:
        limiter = RateLimiter(
            DatabaseStorage(container.engine),
            DatabasePatientCounter(container.engine),
            per_token=0,
            per_address=0,
            patients_per_hour=2,
            patient_window=1,
        )
        assert await limiter.patient("H002/dr", "p1") is None
        assert await limiter.patient("H002/dr", "p2") is None
        refused = await limiter.patient("H002/dr", "p3")
        assert refused is not None and refused.retry_after == 1
        await asyncio.sleep(1.1)
        assert await limiter.patient("H002/dr", "p3") is None
    finally:
        await container.close()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_redis_counters_are_shared_by_two_processes(build: Any) -> None:
    await away_from_a_minute_boundary()
    limits = {
        "redis_url": SecretStr(REDIS_URL),
        "distinct_patients_per_hour": 2,
        "rate_limit_per_minute": 5,
    }
    first, second = await build(**limits), await build(**limits)
    subject = f"dr.redis-{uuid.uuid4().hex[:8]}"  # the Redis server outlives the test
    doctor = await bearer(first.container, subject=subject)
    assert (
        await first.http.post(CHECK, json=check_body(resident_id(0)), headers=doctor)
    ).is_success
    assert (
        await second.http.post(CHECK, json=check_body(resident_id(1)), headers=doctor)
    ).is_success
    assert_429(
        await first.http.post(CHECK, json=check_body(resident_id(2)), headers=doctor), "patients"
    )
    assert (
        await second.http.post(CHECK, json=check_body(resident_id(0)), headers=doctor)
    ).is_success
    reasons = "/api/v1/recognition/decline-reasons"
    assert (await first.http.get(reasons, headers=doctor)).status_code == 200  # the 5th
    assert_429(await second.http.get(reasons, headers=doctor), "token")
    async with first.container.sessions() as s:  # nothing went to the database
        assert (await s.execute(select(rate_limit_patient))).first() is None
