"""`mrb adapter fhir --poll` against hospital FHIR servers that misbehave, over real
sockets: a server whose pages never end is polled until SIGTERM, which ends the run after
the page being read (exit 0, the cursor kept); a `next` link to another server or back to
a page already read stops the run with an error, and the other server is never contacted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request

from adapters.common.signing import create_key
from tests.conftest import free_port
from tests.e2e.test_fhir_adapter import report_resources

pytestmark = pytest.mark.slow


class EndlessServer:
    """Page n holds report P-n (lastUpdated rising) and links to page n+1, or to `links`."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.pages = 0
        self.next_to: str | None = None  # a fixed next link (another server, itself)
        self.app = FastAPI()
        self.app.get("/fhir/DiagnosticReport")(self.search)

    async def search(self, request: Request) -> dict[str, Any]:
        await asyncio.sleep(self.delay)
        n = int(request.query_params.get("_page", "0"))
        self.pages += 1
        patient, report, *observations = report_resources(
            f"P-{n}", f"2026-05-18T10:{n // 60:02d}:{n % 60:02d}+08:00"
        )
        entries = [{"resource": report, "search": {"mode": "match"}}]
        entries += [
            {"resource": r, "search": {"mode": "include"}} for r in (patient, *observations)
        ]
        nxt = self.next_to or str(request.url.include_query_params(_page=n + 1))
        return {"resourceType": "Bundle", "type": "searchset",
                "link": [{"relation": "next", "url": nxt}], "entry": entries}  # fmt: skip


@pytest.fixture
async def hospital() -> AsyncIterator[tuple[EndlessServer, str]]:
    fake = EndlessServer()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield fake, f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    await task


def adapter_env(tmp_path: Path) -> dict[str, str]:
    """An adapter's environment with its signing key; no Kafka (a stopped run or a failed
    one never delivers)."""
    create_key(tmp_path / "adapter" / "keys", "H001")
    return {
        **os.environ,
        "MRB_DATA_DIR": str(tmp_path / "adapter"),
        "MRB_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "MRB_FHIR_SOURCE_TOKEN": "source-token",
        "COLUMNS": "300",
    }


async def start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", "adapter", "fhir", "--hospital", "H001",
        "--timeout", "5", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


def cursor_of(tmp_path: Path) -> str | None:
    (path,) = (tmp_path / "adapter").glob("fhir-poll-*.json")
    value = json.loads(path.read_text())["last_updated"]
    return str(value) if value else None


async def test_sigterm_ends_an_endless_poll_after_the_current_page(
    tmp_path: Path, hospital: tuple[EndlessServer, str]
) -> None:
    fake, base = hospital
    proc = await start(adapter_env(tmp_path), "--poll", base, "--max-pages", "100000")
    for _ in range(200):  # until a few pages are in (the first run also starts Python)
        if fake.pages >= 4:
            break
        await asyncio.sleep(0.1)
    assert fake.pages >= 4
    proc.send_signal(signal.SIGTERM)
    out = (await asyncio.wait_for(proc.communicate(), 15))[0].decode()
    assert proc.returncode == 0, out
    assert "stopped: the cursor stays at" in out
    served = fake.pages
    assert served <= 8  # it stopped: no page was asked for after the one being read
    read = int(out.split(" report(s)")[0].rsplit(" ", 1)[1])
    assert read in (served - 1, served)  # every page read was queued
    await asyncio.sleep(0.5)
    assert fake.pages == served
    n = read - 1  # the newest report read
    assert cursor_of(tmp_path) == f"2026-05-18T10:{n // 60:02d}:{n % 60:02d}+08:00"


async def test_a_next_link_to_another_server_is_refused_and_never_contacted(
    tmp_path: Path, hospital: tuple[EndlessServer, str]
) -> None:
    fake, base = hospital
    connections = 0

    async def count(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    other = await asyncio.start_server(count, "127.0.0.1", 0)
    port = other.sockets[0].getsockname()[1]
    fake.next_to = f"http://127.0.0.1:{port}/fhir/DiagnosticReport?_page=1"
    try:
        proc = await start(adapter_env(tmp_path), "--poll", base)
        out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    finally:
        other.close()
        await other.wait_closed()
    assert proc.returncode == 1, out
    assert "another server" in out and "token was not sent" in out
    assert connections == 0 and fake.pages == 1


async def test_a_page_linking_to_itself_is_an_error_not_an_endless_run(
    tmp_path: Path, hospital: tuple[EndlessServer, str]
) -> None:
    fake, base = hospital
    fake.next_to = f"{base}/DiagnosticReport?_page=7"
    proc = await start(adapter_env(tmp_path), "--poll", base)
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    assert proc.returncode == 1, out
    assert "already read" in out and fake.pages == 2  # the search, page 7; page 7 again: no
