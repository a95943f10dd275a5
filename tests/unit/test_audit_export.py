"""The checkpoint export file: one JSON line per checkpoint, appended, never rewritten."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.domain.audit_chain import Checkpoint
from broker.storage.audit_export import ExportError, FileExport, from_line, open_export

AT = datetime(2026, 5, 20, 9, 0, tzinfo=UTC)


def cp(seq: int) -> Checkpoint:
    return Checkpoint(seq, f"{seq:064x}", "audit-0123456789ab", bytes([seq]) * 64, AT)


def test_each_checkpoint_is_one_json_line_with_what_verification_needs(tmp_path: Path) -> None:
    export = FileExport(tmp_path / "out" / "audit.jsonl")
    export.append([cp(3), cp(5)])
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {
        "seq": 3,
        "hash": f"{3:064x}",
        "key_id": "audit-0123456789ab",
        "signature": base64.b64encode(bytes([3]) * 64).decode(),
        "at": "2026-05-20T09:00:00+00:00",
    }
    assert export.read().records == (cp(3), cp(5))
    assert stat.S_IMODE((tmp_path / "out" / "audit.jsonl").stat().st_mode) == 0o600


def test_appends_keep_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    FileExport(path).append([cp(1)])
    FileExport(path).append([cp(2)])
    assert [c.seq for c in FileExport(path).read().records] == [1, 2]
    assert FileExport(path).last_seq() == 2


def test_a_record_torn_by_a_crash_stays_a_line_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    FileExport(path).append([cp(1)])
    with path.open("a") as fh:
        fh.write('{"seq": 2, "ha')  # the power went
    FileExport(path).append([cp(2)])
    read = FileExport(path).read()
    assert [c.seq for c in read.records] == [1, 2] and read.unreadable == (2,)
    assert FileExport(path).last_seq() == 2


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    read = FileExport(tmp_path / "none.jsonl").read()
    assert read.missing is not None and "does not exist" in read.missing
    assert FileExport(tmp_path / "none.jsonl").last_seq() == 0


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"seq": true, "hash": "' + "0" * 64 + '", "key_id": "k", "signature": ""}',
        '{"seq": 1, "hash": "xyz", "key_id": "k", "signature": ""}',
        '{"seq": 1, "hash": "' + "0" * 64 + '", "key_id": "k", "signature": "***"}',
        '{"seq": 0, "hash": "' + "0" * 64 + '", "key_id": "k", "signature": ""}',
        "[]",
    ],
)
def test_lines_that_are_not_records(line: str) -> None:
    assert from_line(line) is None


def test_locations(tmp_path: Path) -> None:
    assert open_export(f"file://{tmp_path}/a.jsonl").location == f"{tmp_path}/a.jsonl"
    assert open_export(str(tmp_path / "b.jsonl")).location == str(tmp_path / "b.jsonl")
    with pytest.raises(ExportError, match="no s3:// adapter"):
        open_export("s3://audit-bucket/mrb/checkpoints.jsonl")
