"""`mrb up` as an operator runs it: ready, then Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


async def test_ctrl_c_stops_api_worker_and_embedded_broker(tmp_path: Path) -> None:
    http, kafka = free_port(), free_port()
    env = {
        **os.environ,
        "MRB_DATA_DIR": str(tmp_path),
        "MRB_HTTP_PORT": str(http),
        "MRB_EMBEDDED_KAFKA_PORT": str(kafka),
    }
    env.pop("MRB_KAFKA_BOOTSTRAP", None)
    env.pop("MRB_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}") as client:
            for _ in range(200):
                try:
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                pytest.fail("mrb up did not become ready")
            assert ready.json()["checks"]["ingest_worker_0"]["kafka"] in ("ok", "unavailable")
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0
    # The embedded broker is gone with it: its port is free again.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", kafka)
