"""PACS -> C-STORE -> DICOM adapter (spool, outbox) -> Kafka -> broker index, end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from adapters.common.delivery import deliver_continuously
from adapters.common.envelope import Signer
from adapters.common.outbox import DELIVERED, PENDING, Outbox
from adapters.dicom.bundle import BundleOptions
from adapters.dicom.headers import read_headers
from adapters.dicom.scp import ScpSettings, start_scp
from adapters.dicom.service import DicomAdapter
from adapters.dicom.spool import Spool
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import result
from tests import factories as f
from tests.conftest import adapter_env
from tests.integration.test_dicom_scp import REFUSED, samples, store

pytestmark = pytest.mark.slow
SHANGHAI = ZoneInfo("Asia/Shanghai")
KEY = bytes(range(32))


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=True, kafka_needed=True) as s:
        async with s.container.sessions() as session, session.begin():
            await hospitals.add(session, hospitals.Hospital("H001", "H001", "510502", "3"))
            await hospitals.add_key(session, "H001", f.key_id("H001"), f.public_b64("H001"))
        yield s


def adapter(tmp_path: Path, quiet: float = 0.2) -> DicomAdapter:
    return DicomAdapter(
        options=BundleOptions("H001", wado_rs_base="https://pacs.h001.example/dicomweb"),
        outbox=Outbox(tmp_path / "outbox.db", KEY),
        spool=Spool(tmp_path / "spool.db", KEY),
        signer=Signer("H001", f.key_id("H001"), f.private_key("H001"), KEY),
        loop=asyncio.get_running_loop(),
        quiet_seconds=quiet,
    )


async def test_a_pacs_sends_studies_that_get_indexed(
    stack: Stack, tmp_path: Path, realdata: Path
) -> None:
    a = adapter(tmp_path)
    scp = start_scp(ScpSettings(port=0), a.on_instance, zone=SHANGHAI, loop=a.loop)
    a.collector.start()
    stop = asyncio.Event()
    bootstrap = stack.container.kafka_bootstrap
    assert bootstrap
    trust = f.receipt_trust(stack.container.settings.keys_dir)
    delivery = asyncio.create_task(
        deliver_continuously(a.outbox, bootstrap, stop, trust=trust, idle=0.2)
    )
    try:
        files = samples(realdata)
        statuses = await asyncio.to_thread(store, scp.port, files)
        ok = [name for name, st in statuses.items() if st.Status == 0x0000]
        assert sorted(set(statuses) - set(ok)) == sorted(REFUSED)
        for _ in range(150):
            counts = a.outbox.counts("H001")
            if counts[DELIVERED] >= len(ok) and counts[PENDING] == 0:
                break
            await asyncio.sleep(0.2)
        assert a.outbox.counts("H001")[DELIVERED] == len(ok)
    finally:
        stop.set()
        await delivery
        scp.stop()
        a.collector.stop(flush=False)
    async with stack.container.sessions() as s:
        studies = (
            await s.execute(select(result).where(result.c.resource_type == "ImagingStudy"))
        ).all()
    assert len(studies) == len(ok)
    assert all(r.status == "available" and r.hospital_id == "H001" for r in studies)
    assert a.spool.pending() == 0


async def test_acknowledged_instances_survive_a_restart(tmp_path: Path, realdata: Path) -> None:
    ct = read_headers(realdata / "dicom" / "CT_small.dcm", zone=SHANGHAI)
    first = adapter(tmp_path, quiet=3600)
    await first.on_instance(ct)  # acknowledged to the PACS; the study is not yet quiet
    first.outbox.close()
    first.spool.close()  # the process dies here

    second = adapter(tmp_path, quiet=3600)
    assert second.restore() == 1
    (bundle,) = second.collector.flush()
    assert bundle.number_of_instances == 1
    assert second.outbox.counts("H001")[PENDING] == 1 and second.spool.pending() == 0
    # A late instance of the same study after another restart: republished whole.
    second.outbox.close()
    second.spool.close()
    third = adapter(tmp_path, quiet=3600)
    assert third.restore() == 1
    assert third.collector.flush() == []  # nothing new: the restored one was published
    later = dataclasses.replace(ct, sop_instance_uid=ct.sop_instance_uid + ".2")
    await third.on_instance(later)
    (grown,) = third.collector.flush()
    assert grown.number_of_instances == 2 and grown.last_updated > bundle.last_updated
    doc = json.loads(grown.value)
    study = next(
        e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "ImagingStudy"
    )
    assert study["numberOfInstances"] == 2
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("spool.db*"))
    assert ct.patient.value.encode() not in on_disk  # headers are sealed at rest
    third.outbox.close()
    third.spool.close()


async def test_the_cli_folder_mode(stack: Stack, tmp_path: Path, realdata: Path) -> None:
    env = await adapter_env(stack, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        "adapter",
        "dicom",
        "--hospital",
        "H001",
        "--timeout",
        "30",
        str(realdata / "dicom"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
    assert proc.returncode == 1, out  # three sample files are not usable
    assert "read 12 file(s): 9 stud(ies), 3 file(s) not usable" in out
    assert "DICOM_TRUNCATED" in out and "MR_truncated.dcm" in out
    assert "indexed: 9" in out
