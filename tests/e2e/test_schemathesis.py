"""Property-based attack on the whole HTTP API from its own OpenAPI description.

schemathesis generates requests for every operation in /openapi.json (paths, queries
and bodies drawn from the described schemas) and each one is sent to a running API (uvicorn on a
free port, SQLite) once per role: a doctor and a finance officer of H002, the platform
administrator and the auditor. Whatever the role or the input, the API must not answer
with a 5xx, and a body sent with a status code and content type the description
documents must match the schema documented for it.

Not checked (yet): that every status code and content type is documented. The
description documents neither the problem+json bodies (401, 403, 404, 413, 422, 429)
nor most refusals, so status_code_conformance and content_type_conformance would fail
on nearly every operation.

Bounded so that it runs in `make test`: a few examples per operation, derandomized (the
same requests on every run), no deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS
from broker.runtime import running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import bearer, certify, free_port

ROLES = (
    ("doctor", "H002"),
    ("finance", "H002"),
    ("platform-admin", ALL_HOSPITALS),
    ("audit", ALL_HOSPITALS),
)
MAX_EXAMPLES = 4


class LiveApi:
    """The API (`mrb up`'s HTTP server, no worker, no Kafka) on its own event loop in a
    background thread, so that schemathesis' synchronous test can call it over HTTP."""

    def __init__(self, tmp: Path) -> None:
        self.settings = Settings(
            data_dir=tmp / "data",
            http_port=free_port(),
            metrics_port=0,
            create_keys=True,
            # Hundreds of requests from one address and token in seconds: the limits
            # would turn most of them into 429 and hide the routes behind.
            rate_limit_per_minute=0,
            rate_limit_per_address_per_minute=0,
            distinct_patients_per_hour=0,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-api", daemon=True)
        self.stopping = asyncio.Event()
        self.ready: Future[None] = Future()
        self.done: Future[None] | None = None
        self.headers: dict[str, dict[str, str]] = {}
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        self.done = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        self.ready.result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        assert self.done is not None
        try:
            self.done.result(timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def _serve(self) -> None:
        try:
            async with running_stack(
                self.settings, api=True, worker=False, kafka_needed=False
            ) as stack:
                c = stack.container
                async with c.sessions() as s, s.begin():
                    for hid in ("H001", "H002"):
                        await hospitals.add(
                            s, hospitals.Hospital(hid, f"Hospital {hid}", "510502", "3")
                        )
                        await hospitals.add_key(s, hid, f.key_id(hid), f.public_b64(hid))
                await certify(c, "H001", valid_to=date(2035, 12, 31))
                today = date.today().isoformat()
                value = f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None)
                (indexed,) = await c.ingest_service().process_batch([f.inbound(value, "H001")])
                assert indexed.outcome.value == "indexed", indexed.detail
                for role, hospital in ROLES:
                    self.headers[role] = await bearer(c, role, hospital, f"{role}.schemathesis")
                self.url = stack.api_url
                self.ready.set_result(None)
                await self.stopping.wait()
        except BaseException as exc:
            if not self.ready.done():
                self.ready.set_exception(exc)
            raise


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    api = LiveApi(tmp_path_factory.mktemp("schemathesis"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, made at import so that schemathesis can make one
    test per operation (its lazy `from_fixture` loader does not run on this pytest).

    The description depends on the routes and models only: the app is built around a
    stand-in that carries the settings and nothing else, and never serves a request.
    `test_the_described_api_is_the_served_one` checks it is what the live API serves.
    """
    stand_in = cast(Container, SimpleNamespace(settings=Settings()))
    return create_app(stand_in).openapi()


OPENAPI = openapi_document()
# The coverage phase alone makes dozens of cases per operation (every boundary and
# missing field), each sent once per role at ~50 ms: minutes. The examples phase (the
# description's own examples) and MAX_EXAMPLES generated cases per operation stay.
# Run by hand with these four roles: all phases (4.5 minutes), and 40 generated cases
# per operation (4 minutes): no 5xx.
CONFIG = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


def test_the_described_api_is_the_served_one(live_api: LiveApi, http: requests.Session) -> None:
    served = http.get(f"{live_api.url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == OPENAPI


CHECKS = [schemathesis.checks.not_a_server_error, response_schema_conformance]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_for_any_role(
    case: schemathesis.Case, live_api: LiveApi, http: requests.Session
) -> None:
    for role, _ in ROLES:
        case.call_and_validate(
            base_url=live_api.url,
            session=http,
            headers=live_api.headers[role],
            checks=CHECKS,
        )
