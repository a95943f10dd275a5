"""Where checkpoints go as they are made: an append-only place outside the database.

`CheckpointExport` is the port; `FileExport` writes JSON lines to a file opened with
O_APPEND and fsync'd after every append (put it on another host or a volume with the
append-only attribute, `chattr +a`). An object store (s3://…) would be another adapter
of the same port; `open_export` refuses any location it has no adapter for.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from broker.domain.audit_chain import Checkpoint, ExportRead

_HASH = re.compile(r"[0-9a-f]{64}")
_TAIL_BYTES = 64 * 1024


class ExportError(ValueError):
    """An export location mrb cannot write to or has no adapter for."""


class CheckpointExport(Protocol):
    """An append-only destination for signed checkpoints."""

    @property
    def location(self) -> str: ...

    def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Add these checkpoints durably (returns once they are on stable storage)."""

    def read(self) -> ExportRead:
        """Every record, the lines that are not records, or why there is nothing to read."""

    def last_seq(self) -> int:
        """The highest seq exported so far (0 if none): where the sealer resumes."""


def to_line(cp: Checkpoint) -> str:
    """One export record: seq, hash, key id, signature (base64) and time, as one JSON line."""
    record = {
        "seq": cp.seq,
        "hash": cp.hash,
        "key_id": cp.key_id,
        "signature": base64.b64encode(cp.signature).decode(),
        "at": cp.at.isoformat() if cp.at else None,
    }
    return json.dumps(record, separators=(",", ":")) + "\n"


def from_line(line: str) -> Checkpoint | None:
    """The checkpoint a line records, or None if it is not a well-formed record."""
    try:
        record: Any = json.loads(line)
        seq, hash_, key_id = record["seq"], record["hash"], record["key_id"]
        signature = base64.b64decode(record["signature"], validate=True)
        at = datetime.fromisoformat(record["at"]) if record.get("at") else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if not isinstance(hash_, str) or not _HASH.fullmatch(hash_) or not isinstance(key_id, str):
        return None
    return Checkpoint(seq, hash_, key_id, signature, at)


class FileExport:
    """JSON lines in one file, appended with O_APPEND and fsync'd."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def location(self) -> str:
        return str(self.path)

    def append(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return
        data = "".join(to_line(cp) for cp in checkpoints).encode()
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if not created and not self._ends_with_newline():
                data = b"\n" + data  # a record torn by a crash stays a line of its own
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new directory entry must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def read(self) -> ExportRead:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ExportRead(missing=f"the checkpoint export {self.path} does not exist")
        except (OSError, UnicodeDecodeError) as exc:
            return ExportRead(missing=f"the checkpoint export {self.path} cannot be read: {exc}")
        records: list[Checkpoint] = []
        unreadable: list[int] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            cp = from_line(line)
            if cp is None:
                unreadable.append(number)
            else:
                records.append(cp)
        return ExportRead(tuple(records), tuple(unreadable))

    def last_seq(self) -> int:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - _TAIL_BYTES))
                tail = fh.read()
        except FileNotFoundError:
            return 0
        seqs = [
            cp.seq
            for line in tail.decode("utf-8", "replace").splitlines()
            if (cp := from_line(line))
        ]
        if not seqs and len(tail) == _TAIL_BYTES:
            seqs = [cp.seq for cp in self.read().records]  # only unreadable lines at the end
        return max(seqs, default=0)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) == 0:
                return True
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


def open_export(location: str) -> CheckpointExport:
    """The export at `location`: a file path (or file:// URL). Object stores need an adapter."""
    target = location.strip()
    if target.startswith("file://"):
        target = target.removeprefix("file://")
    elif "://" in target:
        scheme = target.split("://", 1)[0]
        raise ExportError(
            f"MRB_AUDIT_EXPORT={location}: mrb has no {scheme}:// adapter; give a file path "
            "(on another host or an append-only volume) instead"
        )
    if not target:
        raise ExportError("MRB_AUDIT_EXPORT is empty: give a file path")
    return FileExport(Path(target).expanduser())
