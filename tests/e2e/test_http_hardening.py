"""The API's outer edge: bounded bodies, bounded metric labels, metrics on their own port,
no caching of patient data, and an access log without identifiers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from tests import factories as f
from tests.conftest import bearer

# SQLite is enough here: nothing below depends on the database engine.
pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)

MIB = 1024 * 1024
CHECK = "/api/v1/recognition/check"


def check_body(patient: str = f.PATIENT_A) -> dict[str, object]:
    return {
        "patient": {"system": f.NATIONAL, "value": patient},
        "ordering_hospital": "H002",
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": [{"system": "http://loinc.org", "code": "718-7"}],
    }


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    """The whole application, in process (no token: each test sends its own)."""
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as c:
        yield c


class Streamed:
    """A chunked request body (no Content-Length) that counts the chunks pulled from it."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.total:
            self.pulled += 1
            sent += self.chunk
            yield b" " * self.chunk


def assert_413(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 413 and r.json()["title"] == "Content Too Large"


class TestBodyLimit:
    async def test_an_oversized_body_without_a_token_is_413_not_401(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.post(CHECK, content=b" " * (MIB + 1), headers={"content-type": "x"})
        assert_413(r)

    async def test_a_declared_oversized_body_is_refused_before_it_is_read(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        body = Streamed(4 * MIB)
        r = await client.post(
            CHECK,
            content=body,
            headers={"Content-Length": str(4 * MIB), **(await bearer(container))},
        )
        assert_413(r)
        assert body.pulled == 0

    async def test_a_chunked_oversized_body_is_cut_off_at_the_limit(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        for headers in ({}, await bearer(container)):  # with or without a token: the same
            body = Streamed(64 * MIB)
            r = await client.post(CHECK, content=body, headers=headers)
            assert_413(r)
            assert "content-length" not in r.request.headers
            assert body.pulled == MIB // body.chunk + 1  # the rest is never pulled

    async def test_a_normal_body_passes(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        assert (await client.post(CHECK, json=check_body())).status_code == 401
        r = await client.post(CHECK, json=check_body(), headers=await bearer(container))
        assert r.status_code == 200, r.text
        assert r.json()["items"][0]["decision"] == "NO_PRIOR_RESULT"

    async def test_the_limit_is_a_setting(self, container: Container) -> None:
        container.settings = container.settings.model_copy(update={"max_body_bytes": 100})
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as c:
            assert_413(await c.post(CHECK, json=check_body()))  # about 200 bytes


def samples(route: str | None = None) -> dict[str, float]:
    """Request counts in mrb_http_request_seconds by method label (optionally one route)."""
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name != "mrb_http_request_seconds":
            continue
        for s in metric.samples:
            if s.name.endswith("_count") and (route is None or s.labels["route"] == route):
                counts[s.labels["method"]] = counts.get(s.labels["method"], 0) + s.value
    return counts


class TestMetricLabels:
    async def test_made_up_methods_share_one_label(self, client: httpx.AsyncClient) -> None:
        before = samples(CHECK)
        methods = [f"MADEUP{i}" for i in range(50)]
        for method in methods:
            r = await client.request(method, CHECK)
            assert r.status_code == 405
        after = samples(CHECK)
        assert not set(methods) & set(samples())
        assert set(after) - set(before) <= {"OTHER"}
        assert after["OTHER"] - before.get("OTHER", 0) == 50

    async def test_the_route_label_is_the_template_never_the_path(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        await client.get(f"/fhir/Patient/{f.PATIENT_B}", headers=await bearer(container))
        await client.get(f"/no/such/{f.PATIENT_B}")
        routes = {
            s.labels["route"]
            for m in REGISTRY.collect()
            if m.name == "mrb_http_request_seconds"
            for s in m.samples
        }
        assert "/fhir/{resource_type}/{rid}" in routes and "unmatched" in routes
        assert not any(f.PATIENT_B in r for r in routes)


class TestNoStore:
    async def test_every_response_that_can_hold_patient_data_is_no_store(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        token = await bearer(container)
        answers = [
            await client.post(CHECK, json=check_body(), headers=token),
            await client.post(CHECK, json=check_body()),  # a 401 problem
            await client.get("/api/v1/notifications", headers=token),
            await client.get("/fhir/metadata"),
            await client.get("/fhir/Patient", params={"identifier": f.PATIENT_A}, headers=token),
            await client.get("/cds-services"),
            await client.get("/doctor"),
            await client.get("/finance"),
            await client.get("/api/v1/nothing"),
            await client.post(CHECK, content=b" " * (MIB + 1)),
        ]
        for r in answers:
            assert r.headers.get_list("cache-control") == ["no-store"], r.request.url
            assert r.headers["pragma"] == "no-cache"

    async def test_static_assets_may_be_cached(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/static/style.css")
        assert r.status_code == 200 and "no-store" not in r.headers.get("cache-control", "")


async def test_an_unhandled_error_is_no_store_logged_and_carries_the_request_id(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    """The edge sits outside Starlette's own 500 handler: crashes get it too."""
    app = create_app(container)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom/{thing}", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as c:
        r = await c.get("/api/v1/boom/x", headers={"X-Request-ID": "crash-1"})
    assert r.status_code == 500
    assert r.headers["cache-control"] == "no-store" and r.headers["x-request-id"] == "crash-1"
    (line,) = access_lines(caplog)
    assert line.levelno == logging.ERROR and line.status == 500  # type: ignore[attr-defined]
    assert line.route == "/api/v1/boom/{thing}" and line.request_id == "crash-1"  # type: ignore[attr-defined]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "broker.access"]


class TestAccessLog:
    async def test_a_401_is_one_warning_line_with_the_request_id(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        r = await client.post(CHECK, json=check_body(), headers={"X-Request-ID": "ehr-7f3a"})
        assert r.status_code == 401 and r.headers["x-request-id"] == "ehr-7f3a"
        (line,) = access_lines(caplog)
        assert line.levelno == logging.WARNING
        assert (line.route, line.method, line.status) == (CHECK, "POST", 401)  # type: ignore[attr-defined]
        assert line.request_id == "ehr-7f3a" and line.subject is None  # type: ignore[attr-defined]
        assert isinstance(line.latency_ms, float) and line.client == "127.0.0.1"  # type: ignore[attr-defined]

    async def test_a_403_names_the_caller_and_a_success_is_info(
        self, client: httpx.AsyncClient, container: Container, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO)
        doctor = await bearer(container, "doctor", "H002", "dr.li")
        ok = await client.post(CHECK, json=check_body(), headers=doctor)
        refused = await client.get("/api/v1/savings", headers=doctor)
        assert (ok.status_code, refused.status_code) == (200, 403)
        first, second = access_lines(caplog)
        assert first.levelno == logging.INFO and second.levelno == logging.WARNING
        for line in (first, second):
            assert (line.subject, line.hospital, line.role) == ("dr.li", "H002", "doctor")  # type: ignore[attr-defined]
        assert second.route == "/api/v1/savings" and second.status == 403  # type: ignore[attr-defined]
        # A generated correlation id, echoed to the caller.
        assert first.request_id == ok.headers["x-request-id"] and len(first.request_id) == 32  # type: ignore[attr-defined]

    async def test_a_resident_id_in_a_request_is_in_no_log_line(
        self, client: httpx.AsyncClient, container: Container, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Not the test client's own request lines: configure_logging keeps httpx at WARNING.
        caplog.set_level(logging.WARNING, logger="httpx")
        caplog.set_level(logging.INFO)  # last: the capturing handler takes this level
        token = await bearer(container)
        patient = f.PATIENT_A
        query = {"identifier": f"{f.NATIONAL}|{patient}"}
        statuses = [
            (await client.post(CHECK, json=check_body(patient), headers=token)).status_code,
            (await client.get("/fhir/Patient", params=query, headers=token)).status_code,
            (await client.get("/fhir/Patient", params=query)).status_code,
            (await client.post("/fhir/Patient/_search", data=query, headers=token)).status_code,
            (await client.get(f"/fhir/Patient/{patient}", headers=token)).status_code,
            (await client.get(f"/api/v1/patients/{patient}", params=query)).status_code,
            (await client.post(CHECK, json=check_body(patient))).status_code,
        ]
        assert statuses[0] == 200 and statuses[2] == 401 and statuses[-1] == 401
        assert len(access_lines(caplog)) == len(statuses)
        for record in caplog.records:
            assert patient not in record.getMessage()
            assert patient not in repr(vars(record))
            assert patient not in caplog.text


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        yield s


class TestServed:
    async def test_metrics_are_on_their_own_port_not_the_apis(self, stack: Stack) -> None:
        settings = stack.container.settings
        assert Settings.model_fields["metrics_host"].default == "127.0.0.1"  # loopback
        assert stack.metrics_url == f"http://127.0.0.1:{settings.metrics_port}/metrics"
        async with httpx.AsyncClient(base_url=stack.api_url) as api:
            await api.get("/healthz")
            gone = await api.get("/metrics")
        assert gone.status_code == 404
        async with httpx.AsyncClient() as scraper:
            metrics = await scraper.get(stack.metrics_url)
        assert metrics.status_code == 200
        assert 'mrb_http_request_seconds_count{method="GET",route="/healthz"' in metrics.text

    async def test_port_0_turns_metrics_off(self, settings: Settings) -> None:
        off = settings.model_copy(update={"metrics_port": 0})
        async with running_stack(off, api=True, worker=False, kafka_needed=False) as s:
            assert s.metrics is None and s.metrics_url is None

    async def test_a_busy_metrics_port_is_a_clear_error(self, settings: Settings) -> None:
        busy = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = busy.sockets[0].getsockname()[1]
        try:
            clash = settings.model_copy(update={"metrics_port": port})
            with pytest.raises(OSError, match="MRB_METRICS_PORT"):
                async with running_stack(clash, api=True, worker=False, kafka_needed=False):
                    pass
        finally:
            busy.close()
            await busy.wait_closed()

    async def test_uvicorn_answers_413_without_waiting_for_the_body(self, stack: Stack) -> None:
        """Headers announce 1 GB, no body follows: the answer comes at once."""
        s = stack.container.settings
        reader, writer = await asyncio.open_connection(s.http_host, s.http_port)
        writer.write(
            f"POST {CHECK} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**9}\r\n\r\n".encode()
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert status.startswith(b"HTTP/1.1 413")
