"""`mrb up` as an operator runs it: ready, then Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


async def test_ctrl_c_stops_api_worker_and_embedded_broker(tmp_path: Path) -> None:
    http, kafka, metrics = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "MRB_DATA_DIR": str(tmp_path),
        "MRB_HTTP_PORT": str(http),
        "MRB_METRICS_PORT": str(metrics),
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
            assert (await client.get("/metrics")).status_code == 404
            scraped = await client.get(f"http://127.0.0.1:{metrics}/metrics")
            assert "mrb_consumer_lag" in scraped.text
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0
    # What it wrote is its owner's alone (the CLI sets umask 077).
    for written in (tmp_path / "mrb.db", tmp_path / "tansu.log", tmp_path / "keys"):
        assert stat.S_IMODE(written.stat().st_mode) & 0o077 == 0, written
    # The embedded broker and the metrics listener are gone with it: their ports are free.
    for port in (kafka, metrics):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
