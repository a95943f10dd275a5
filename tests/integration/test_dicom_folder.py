"""Folder mode over a directory of real samples and junk, then through the real broker."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from adapters.dicom.bundle import BundleOptions, StudyBundle
from adapters.dicom.folder import FileProblem, read_folder, scan
from adapters.dicom.headers import DicomErrorCode
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.identifiers import RESIDENT_ID_SYSTEM
from broker.domain.recognition import Decision, Order
from broker.domain.registry import Certification, CertifyingBody
from broker.ingest.service import Outcome
from broker.services.checks import CheckRequest, run_check
from broker.storage import hospitals
from tests import factories as f

SHANGHAI = ZoneInfo("Asia/Shanghai")
OPTIONS = BundleOptions("H001", wado_rs_base="https://pacs.h001.example/dicom-web")
MTIME = datetime(2026, 5, 20, 1, 0, tzinfo=UTC).timestamp()
RESIDENT_ID = "510502198511110022"  # check digit per GB 11643

EXPECTED_PROBLEMS = {
    "ExplVR_BigEnd.dcm": DicomErrorCode.NO_PATIENT,
    "MR_truncated": DicomErrorCode.TRUNCATED,
    "test-SR.dcm": DicomErrorCode.NO_PATIENT,
    "notes.txt": DicomErrorCode.UNREADABLE,
    "empty.dcm": DicomErrorCode.UNREADABLE,
}


def touch(path: Path, mtime: float = MTIME) -> None:
    os.utime(path, (mtime, mtime))


@pytest.fixture
def folder(realdata: Path, tmp_path: Path) -> Path:
    """The samples spread over nested folders, some without an extension, plus junk."""
    root = tmp_path / "export"
    for n, src in enumerate(sorted((realdata / "dicom").iterdir())):
        sub = root / f"patient{n % 3}" / "series"
        sub.mkdir(parents=True, exist_ok=True)
        name = src.stem if src.name == "MR_truncated.dcm" else src.name  # no extension
        shutil.copyfile(src, sub / name)
        touch(sub / name)
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "empty.dcm").write_bytes(b"")
    (root / "DICOMDIR").write_bytes(b"an index, skipped")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "x.dcm").write_bytes(b"hidden folder, skipped")
    return root


def test_every_file_ends_as_a_study_or_a_named_problem(folder: Path, realdata: Path) -> None:
    seen: list[Path] = []
    result = read_folder([folder], options=OPTIONS, zone=SHANGHAI, on_file=seen.append)
    assert result.files == len(seen) == 14  # 12 samples, notes.txt, empty.dcm
    assert {p.path.name: p.code for p in result.problems} == EXPECTED_PROBLEMS
    assert all(p.detail for p in result.problems)
    assert len(result.bundles) == 9
    uids = [b.study_uid for b in result.bundles]
    assert uids == sorted(uids)
    assert all(b.last_updated == datetime.fromtimestamp(MTIME, UTC) for b in result.bundles)


def test_the_same_folder_gives_the_same_bytes(folder: Path) -> None:
    first = read_folder([folder], options=OPTIONS, zone=SHANGHAI)
    again = read_folder([folder], options=OPTIONS, zone=SHANGHAI)
    assert [b.value for b in first.bundles] == [b.value for b in again.bundles]


def test_scan_yields_problems_as_it_reads_and_bundles_at_the_end(folder: Path) -> None:
    kinds = [type(item) for item in scan([folder], options=OPTIONS, zone=SHANGHAI)]
    first_bundle = kinds.index(StudyBundle)
    assert set(kinds[:first_bundle]) == {FileProblem}
    assert set(kinds[first_bundle:]) == {StudyBundle}


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_folder([tmp_path / "nowhere"], options=OPTIONS, zone=SHANGHAI)


def test_a_study_that_gains_a_file_is_a_later_version(realdata: Path, tmp_path: Path) -> None:
    mr = realdata / "dicom" / "MR_small.dcm"
    shutil.copyfile(mr, tmp_path / "1.dcm")
    touch(tmp_path / "1.dcm")
    (before,) = read_folder([tmp_path], options=OPTIONS, zone=SHANGHAI).bundles
    ds = pydicom.dcmread(mr)
    ds.SOPInstanceUID, ds.InstanceNumber = f"{ds.SOPInstanceUID}.2", 2
    ds.save_as(tmp_path / "2.dcm")
    touch(tmp_path / "2.dcm", MTIME + 600)
    (after,) = read_folder([tmp_path], options=OPTIONS, zone=SHANGHAI).bundles
    assert (before.number_of_instances, after.number_of_instances) == (1, 2)
    assert after.last_updated > before.last_updated


def recent_head_ct(realdata: Path, path: Path) -> Path:
    """The sample head CT as if scanned on 2026-05-15, with the patient's resident ID."""
    ds = pydicom.dcmread(realdata / "dicom" / "dicomdir_77654033_CT2_17106.dcm")
    ds.StudyDate = "20260515"
    other = Dataset()
    other.PatientID = RESIDENT_ID
    other.IssuerOfPatientID = "身份证"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.OtherPatientIDsSequence = Sequence([other])
    path.mkdir(parents=True, exist_ok=True)
    ds.save_as(path / "ct.dcm")
    return path


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_published_studies_are_indexed_and_recognised(
    folder: Path, realdata: Path, tmp_path: Path, container: Container
) -> None:
    scanned = read_folder([folder], options=OPTIONS, zone=SHANGHAI)
    service = container.ingest_service()
    processed = await service.process_batch([f.inbound(b.value) for b in scanned.bundles])
    assert [(p.outcome, p.results) for p in processed] == [(Outcome.INDEXED, 1)] * 9
    replayed = await service.process_batch([f.inbound(scanned.bundles[0].value)])
    assert replayed[0].outcome is Outcome.DUPLICATE

    (ct,) = read_folder(
        [recent_head_ct(realdata, tmp_path / "recent")], options=OPTIONS, zone=SHANGHAI
    ).bundles
    (p,) = await service.process_batch([f.inbound(ct.value)])
    assert p.outcome is Outcome.INDEXED, p.detail
    async with container.sessions() as s, s.begin():
        await hospitals.certify(
            s,
            Certification(
                "H001", "CT", CertifyingBody.PROVINCIAL_EQA, date(2026, 1, 1), date(2026, 12, 31)
            ),
            reference=None,
        )
    head_ct = Order(modality="CT", body_site="69536005", contrast=False)
    answer = await run_check(
        container.check_uow(),
        container.reference_rules(),
        CheckRequest(
            RESIDENT_ID_SYSTEM,
            RESIDENT_ID,
            "H002",
            datetime(2026, 5, 20, 1, tzinfo=UTC),
            (head_ct,),
        ),
        Actor("dr-wang", Role.DOCTOR, "H002"),
    )
    (item,) = answer.items
    assert item.decision.item is not None and item.decision.item.code == "IMG-CT-HEAD-PLAIN"
    assert item.decision.decision is Decision.RECOGNIZABLE, item.decision.explanation
