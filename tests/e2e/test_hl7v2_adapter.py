"""LIS -> MLLP / files -> `mrb adapter hl7v2` -> Kafka -> broker index, end to end."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.hl7v2.mllp import MllpDecoder, frame
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


async def results(stack: Stack) -> list[str]:
    """The business ids indexed, opened from their sealed copies (the column is a hash)."""
    async with stack.container.sessions() as s:
        rows = (await s.execute(select(result))).all()
    return [f.business_id_of(stack.container, r) for r in rows]


async def test_file_mode_publishes_every_sample_or_names_its_error(
    stack: Stack, tmp_path: Path, realdata: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", "adapter", "hl7v2", "--hospital", "H001",
        "--timeout", "30", str(realdata / "hl7v2"),
        env=await adapter_env(stack, tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
    assert proc.returncode == 1, out  # one sample needs an interface setting
    assert "HL7_INVALID_VALUE" in out and "nodehl7_bicp_ORUR01.hl7:1" in out
    assert "rejected" not in out.split("queued")[1].split("\n")[1]  # nothing the broker refused
    indexed = await results(stack)
    assert "845439" in "".join(indexed) or "1045813" in "".join(indexed)
    assert any("R-991133" in b for b in indexed)  # the NIST LRI CBC message


def ack_mode(raw: bytes, accept: bytes, application: bytes) -> bytes:
    """The sample with MSH-15/16 set: AL/AL is enhanced mode, empty is original mode."""
    segments = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    msh = segments[0].split(b"|")
    msh += [b""] * (17 - len(msh))
    msh[14], msh[15] = accept, application  # split index n = MSH-(n+1)
    return b"\r".join([b"|".join(msh), *segments[1:]])


async def test_mllp_listener_commit_ack_then_application_ack(
    stack: Stack, tmp_path: Path, realdata: Path
) -> None:
    received: list[bytes] = []
    got_app_ack = asyncio.Event()

    async def lis_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = MllpDecoder()
        while data := await reader.read(65536):
            for item in decoder.feed(data):
                assert isinstance(item, bytes)
                received.append(item)
                writer.write(frame(b"MSH|^~\\&|LIS||MRB||20260520||ACK|1|P|2.4\rMSA|CA|x\r"))
                await writer.drain()
                got_app_ack.set()

    lis = await asyncio.start_server(lis_listener, "127.0.0.1", 0)
    lis_port = lis.sockets[0].getsockname()[1]
    mllp_port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", "adapter", "hl7v2", "--hospital", "H001",
        "--listen", f"127.0.0.1:{mllp_port}", "--ack-to", f"127.0.0.1:{lis_port}",
        env=await adapter_env(stack, tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", mllp_port)
                break
            except OSError:
                await asyncio.sleep(0.2)
        sample = (realdata / "hl7v2" / "pythonhl7_sample_hl7_oru.hl7").read_bytes()
        message = ack_mode(sample, b"AL", b"AL")
        writer.write(frame(message))
        await writer.drain()
        commit = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        assert b"MSA|CA|CNTRL-3456" in commit  # stored: the commit ACK comes at once
        original = ack_mode((realdata / "hl7v2" / "msfc_ORU-R01-01.hl7").read_bytes(), b"", b"")
        writer.write(frame(original))
        await writer.drain()
        plain = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        assert b"MSA|AA|" in plain  # original mode: one ACK, AA once stored
        writer.close()
        await asyncio.wait_for(got_app_ack.wait(), 60)  # after the broker's receipt
        (app_ack,) = received
        assert b"MSA|AA|CNTRL-3456" in app_ack
        assert len(await results(stack)) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        lis.close()
    assert "MLLP listener for H001" in out and "stopped" in out
