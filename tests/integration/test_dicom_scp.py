"""The C-STORE receiver over real DICOM associations on 127.0.0.1 (pynetdicom both ends)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from adapters.dicom.bundle import BundleOptions, StudyBundle
from adapters.dicom.collector import StudyCollector
from adapters.dicom.headers import InstanceHeaders
from adapters.dicom.scp import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SUCCESS,
    InstanceCallback,
    ScpSettings,
    StoreScp,
    start_scp,
)
from broker.ingest.parse import parse_message

SHANGHAI = ZoneInfo("Asia/Shanghai")
REFUSED = {
    "ExplVR_BigEnd.dcm": "DICOM_NO_PATIENT",
    "MR_truncated.dcm": "DICOM_TRUNCATED",
    "test-SR.dcm": "DICOM_NO_PATIENT",
}


def samples(realdata: Path) -> list[Path]:
    return sorted((realdata / "dicom").iterdir())


def scu_association(port: int, files: list[Path], called: str = "MRB") -> Association:
    """An SCU association proposing each file's SOP class in the file's transfer syntax."""
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    contexts = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        contexts.add((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    return ae.associate("127.0.0.1", port, ae_title=called)


def store(port: int, files: list[Path]) -> dict[str, Dataset]:
    """C-STORE each file on one association; the response status per file name."""
    assoc = scu_association(port, files)
    assert assoc.is_established
    try:
        return {path.name: assoc.send_c_store(path) for path in files}
    finally:
        assoc.release()


@dataclass
class Received:
    instances: list[InstanceHeaders] = field(default_factory=list)

    def __call__(self, headers: InstanceHeaders) -> None:
        self.instances.append(headers)


@pytest.fixture
def running() -> Iterator[list[StoreScp]]:
    """SCPs started by a test; every one is shut down afterwards."""
    started: list[StoreScp] = []
    yield started
    for scp in started:
        scp.stop()


def serve(running: list[StoreScp], on_instance: InstanceCallback, **settings: Any) -> StoreScp:
    scp = start_scp(ScpSettings(port=0, **settings), on_instance, zone=SHANGHAI)
    running.append(scp)
    return scp


class StudySink:
    """Collects published bundles; `wait` returns once `expected` studies have arrived."""

    def __init__(self, expected: int) -> None:
        self.bundles: list[StudyBundle] = []
        self.expect(expected)

    def expect(self, expected: int) -> None:
        self.expected = expected
        self._done = threading.Event()
        if len(self.bundles) >= expected:
            self._done.set()

    def __call__(self, bundle: StudyBundle) -> None:
        self.bundles.append(bundle)
        if len(self.bundles) >= self.expected:
            self._done.set()

    def wait(self) -> bool:
        return self._done.wait(30)


def test_every_sample_over_a_real_association(realdata: Path, running: list[StoreScp]) -> None:
    sink = StudySink(expected=9)
    collector = StudyCollector(BundleOptions("H001"), sink, quiet_seconds=0.05)
    collector.start()
    try:
        scp = serve(running, collector.add)
        statuses = store(scp.port, samples(realdata))
        assert sink.wait()
    finally:
        collector.stop(flush=False)
    for name, status in statuses.items():
        if name in REFUSED:
            assert status.Status == CANNOT_UNDERSTAND, name
            assert status.ErrorComment.startswith(REFUSED[name]), name
        else:
            assert status.Status == SUCCESS, name
            assert "ErrorComment" not in status
    expected = {
        pydicom.dcmread(realdata / "dicom" / name, stop_before_pixels=True).StudyInstanceUID
        for name in statuses
        if name not in REFUSED
    }
    assert {b.study_uid for b in sink.bundles} == expected
    for bundle in sink.bundles:
        (result,) = parse_message(bundle.value, hospital="H001", zone=SHANGHAI).results
        assert result.business_id == f"ImagingStudy|urn:dicom:uid|urn:oid:{bundle.study_uid}"
        assert bundle.number_of_instances == 1


def test_a_study_sent_again_with_more_instances_is_published_again(
    realdata: Path, running: list[StoreScp], tmp_path: Path
) -> None:
    sink = StudySink(expected=1)
    collector = StudyCollector(BundleOptions("H001"), sink, quiet_seconds=0.05)
    collector.start()
    try:
        scp = serve(running, collector.add)
        mr = realdata / "dicom" / "MR_small.dcm"
        assert store(scp.port, [mr])["MR_small.dcm"].Status == SUCCESS
        assert sink.wait()
        second = pydicom.dcmread(mr)
        second.SOPInstanceUID = f"{second.SOPInstanceUID}.2"
        second.InstanceNumber = 2
        copy = tmp_path / "MR_small_2.dcm"
        second.save_as(copy)
        sink.expect(2)
        statuses = store(scp.port, [mr, copy])  # the first one again, and a new one
        assert [s.Status for s in statuses.values()] == [SUCCESS, SUCCESS]
        assert sink.wait()
    finally:
        collector.stop(flush=False)
    first, latest = sink.bundles
    assert (first.number_of_instances, latest.number_of_instances) == (1, 2)
    assert latest.last_updated > first.last_updated


def test_a_failing_callback_asks_the_pacs_to_send_again(
    realdata: Path, running: list[StoreScp]
) -> None:
    def broken(headers: InstanceHeaders) -> None:
        raise ConnectionError("the outbox is on a full disk")

    scp = serve(running, broken)
    status = store(scp.port, [realdata / "dicom" / "MR_small.dcm"])["MR_small.dcm"]
    assert status.Status == OUT_OF_RESOURCES
    assert status.ErrorComment == "MRB_NOT_STORED: ConnectionError; retry"


async def test_an_async_callback_runs_on_the_callers_loop(
    realdata: Path, running: list[StoreScp]
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []

    async def on_instance(headers: InstanceHeaders) -> None:
        seen.append((headers.study_uid, asyncio.get_running_loop() is loop))
        if headers.modality == "CT":
            raise RuntimeError("refused downstream")

    scp = StoreScp(ScpSettings(port=0), on_instance, zone=SHANGHAI, loop=loop).start()
    running.append(scp)
    files = [realdata / "dicom" / n for n in ("MR_small.dcm", "CT_small.dcm")]
    statuses = await asyncio.to_thread(store, scp.port, files)
    assert statuses["MR_small.dcm"].Status == SUCCESS
    assert statuses["CT_small.dcm"].Status == OUT_OF_RESOURCES
    assert [on_loop for _, on_loop in seen] == [True, True]


async def test_a_callback_that_hangs_times_out_as_a_retry(
    realdata: Path, running: list[StoreScp]
) -> None:
    never = asyncio.Event()

    async def on_instance(headers: InstanceHeaders) -> None:
        await never.wait()

    settings = ScpSettings(port=0, callback_timeout=0.2)
    scp = StoreScp(settings, on_instance, zone=SHANGHAI, loop=asyncio.get_running_loop())
    running.append(scp.start())
    statuses = await asyncio.to_thread(store, scp.port, [realdata / "dicom" / "MR_small.dcm"])
    assert statuses["MR_small.dcm"].Status == OUT_OF_RESOURCES


def test_verification_and_called_ae_title(realdata: Path, running: list[StoreScp]) -> None:
    scp = serve(running, Received(), ae_title="MRB_H001", require_called_ae_title=True)
    files = [realdata / "dicom" / "MR_small.dcm"]
    wrong = scu_association(scp.port, files, called="SOMEONE")
    assert not wrong.is_established  # rejected: not addressed to this AE
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MRB_H001")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == SUCCESS
    finally:
        assoc.release()


def test_received_headers_are_what_the_file_says(realdata: Path, running: list[StoreScp]) -> None:
    received = Received()
    scp = serve(running, received)
    files = [realdata / "dicom" / n for n in ("ExplVR_BigEnd.dcm", "JPEG-lossy.dcm")]
    store(scp.port, files)
    (h,) = received.instances  # the big-endian one has no Patient ID
    assert (h.modality, h.body_part, h.transfer_syntax) == (
        "NM",
        "WHOLE BODY",
        "1.2.840.10008.1.2.4.51",
    )
