"""`mrb adapter hl7v2|dicom --listen` refusing peers, as an operator configures them.

No broker is needed: nothing refused may reach the outbox, and Kafka (a closed port
here) only delays delivery of what was accepted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from adapters.common.outbox import Outbox
from adapters.common.signing import create_key
from adapters.dicom.scp import SUCCESS
from broker.security.keys import load_or_create_key
from tests.conftest import free_port
from tests.integration.test_listener_access import associate, send, store_mr
from tests.integration.test_mllp_server import ORU

pytestmark = pytest.mark.slow


@asynccontextmanager
async def listener(
    tmp_path: Path, args: list[str], env: dict[str, str], banner: str
) -> AsyncIterator[list[str]]:
    """The adapter running until the block ends (SIGINT); then its output, line by line."""
    create_key(tmp_path / "keys", "H001")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", "adapter", *args, "--hospital", "H001",
        env={
            **os.environ,
            "MRB_DATA_DIR": str(tmp_path),
            "MRB_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
            "COLUMNS": "300",
            **env,
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(30):
            while banner not in (line := (await proc.stdout.readline()).decode()):
                assert line, "".join(output)  # exited before listening
                output.append(line)
        output.append(line)
        yield output
    finally:
        proc.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        output += rest.splitlines(keepends=True)


def pending(tmp_path: Path) -> set[str]:
    box = Outbox(tmp_path / "adapter-outbox.db", load_or_create_key(tmp_path / "keys/outbox.key"))
    try:
        return box.pending_ids()
    finally:
        box.close()


async def test_mllp_refuses_a_peer_outside_allow_peer(tmp_path: Path) -> None:
    port = free_port()
    args = ["hl7v2", "--listen", f"127.0.0.1:{port}", "--allow-peer", "10.0.0.0/8"]
    async with listener(tmp_path, args, {}, "MLLP listener for H001") as output:
        assert await send(port, ORU) == []
    out = "".join(output)
    assert "accepting 10.0.0.0/8 (no TLS)" in out
    assert "mllp connection refused" in out and "address not allowed" in out
    assert "MRN123" not in out
    assert pending(tmp_path) == set()


async def test_dicom_takes_only_the_calling_ae_titles_configured(
    tmp_path: Path, realdata: Path
) -> None:
    port = free_port()
    args = ["dicom", "--listen", f"127.0.0.1:{port}", "--quiet-seconds", "0.2"]
    env = {"MRB_DICOM_ALLOW_CALLING_AETS": "PACS1 PACS2"}
    async with listener(tmp_path, args, env, "DICOM receiver MRB") as output:
        intruder = await asyncio.to_thread(associate, port, realdata, calling="INTRUDER")
        assert intruder.is_rejected
        pacs = await asyncio.to_thread(associate, port, realdata, calling="PACS1")
        assert await asyncio.to_thread(store_mr, pacs, realdata) == SUCCESS
    out = "".join(output)
    assert "accepting 127.0.0.0/8, ::1/128 (no TLS), calling AE titles: PACS1, PACS2" in out
    assert "dicom connection refused" in out and "INTRUDER" in out
    assert "dicom connection accepted" in out
    assert len(pending(tmp_path)) == 1  # the one study PACS1 sent, waiting for Kafka
