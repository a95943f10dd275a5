"""The audit trail as a hash chain (pure): each sealed entry commits to all before it.

Entries are sealed in order (`seq`): hash = SHA-256 over the entry's canonical JSON and
the previous hash. Checkpoints sign (seq, hash) with the sealer's Ed25519 key, which the
database hosts do not hold, and each checkpoint is also exported as it is made to an
append-only place outside the database. Verification compares the three: the entries,
the checkpoints in the database and the exported ones, and names what it finds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

GENESIS = "0" * 64
# The columns an entry's hash covers, in this order.
FIELDS = (
    "id", "at", "actor", "role", "hospital_id", "action", "purpose",
    "patient_pseudonym", "person_id", "detail",
)  # fmt: skip


# Columns added later: hashed only when set, as {name: value} after FIELDS, so entries
# sealed before they existed keep their hash, and setting, changing or clearing one on a
# sealed entry changes it.
OPTIONAL_FIELDS = ("request_id",)


def entry_hash(entry: Mapping[str, Any], seq: int, prev_hash: str) -> str:
    body = [seq, prev_hash, *(_plain(entry.get(f)) for f in FIELDS)]
    later = {f: _plain(entry[f]) for f in OPTIONAL_FIELDS if entry.get(f) is not None}
    if later:
        body.append(later)
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def checkpoint_message(seq: int, hash_: str) -> bytes:
    return f"mrb-audit-checkpoint\n{seq}\n{hash_}".encode()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain's entry `seq` has hash `hash`."""

    seq: int
    hash: str
    key_id: str
    signature: bytes
    at: datetime | None = None

    def same_as(self, other: Checkpoint) -> bool:
        return (self.seq, self.hash, self.key_id, self.signature) == (
            other.seq,
            other.hash,
            other.key_id,
            other.signature,
        )


@dataclass(frozen=True)
class ExportRead:
    """What the checkpoint export held when read; `missing` says why there is none."""

    records: tuple[Checkpoint, ...] = ()
    unreadable: tuple[int, ...] = ()  # line numbers that are not checkpoint records
    missing: str | None = None


class Signatures(Protocol):
    """The pinned checkpoint keys: which key ids they are, and checking a signature."""

    def knows(self, key_id: str) -> bool: ...

    def verifies(self, key_id: str, message: bytes, signature: bytes) -> bool: ...


class Finding(StrEnum):
    """What verification can find; each is evidence that the trail was altered."""

    TRUNCATED = "truncated"  # entries or checkpoints missing at the end
    DELETED = "deleted"  # an entry or checkpoint missing in the middle
    EDITED = "edited"  # an entry's content or the chain's hashes changed
    RESIGNED = "re-signed"  # a checkpoint signed by another key, or unlike the exported one
    EXPORT = "export"  # the export is missing, unreadable or disagrees with itself


@dataclass(frozen=True)
class Problem:
    kind: Finding
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    sealed: int
    unsealed: int
    checkpoints: int
    exported: int
    findings: tuple[Problem, ...]
    notes: tuple[str, ...] = field(default=())  # not evidence of tampering

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.findings)

    @property
    def kinds(self) -> frozenset[Finding]:
        return frozenset(p.kind for p in self.findings)

    @property
    def intact(self) -> bool:
        return not self.findings


def verify_chain(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Checkpoint],
    signatures: Signatures,
    export: ExportRead,
    unsealed: int = 0,
) -> ChainReport:
    """Recompute the sealed entries (ordered by seq), check every checkpoint against the
    pinned keys and the chain, and compare the database with the exported checkpoints."""
    found: list[Problem] = []
    hashes, last = _entries(entries, found)
    db = {cp.seq: cp for cp in checkpoints}
    untrusted: set[int] = set()  # reported once, as re-signed
    for cp in db.values():
        if not _signed(cp, signatures, found, where="checkpoint"):
            untrusted.add(cp.seq)
            continue
        stored = hashes.get(cp.seq)
        if stored is not None and stored != cp.hash:
            found.append(
                Problem(
                    Finding.EDITED,
                    f"checkpoint {cp.seq} signed hash {cp.hash[:12]}…, the chain has "
                    f"{stored[:12]}… there: an entry at or before seq {cp.seq} was changed "
                    "and the chain re-linked",
                    cp.seq,
                )
            )
    exported, notes = _export(export, signatures, db, untrusted, found)
    signed = max((s for s in db if s not in untrusted), default=0)
    _truncation(last, db, signed, exported, found)
    _against_export(last, hashes, db, untrusted, exported, found)
    found.sort(key=lambda p: -1 if p.seq is None else p.seq)
    return ChainReport(
        sealed=len(hashes),
        unsealed=unsealed,
        checkpoints=len(db),
        exported=len(exported),
        findings=tuple(found),
        notes=tuple(notes),
    )


def _entries(
    entries: Iterable[Mapping[str, Any]], found: list[Problem]
) -> tuple[dict[int, str], int]:
    prev, expected = GENESIS, 1
    hashes: dict[int, str] = {}
    for e in entries:
        seq = int(e["seq"])
        if seq > expected:
            gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected}–{seq - 1}"
            found.append(
                Problem(
                    Finding.DELETED,
                    f"{gap} deleted: the chain jumps from seq {expected - 1} to {seq}",
                    expected,
                )
            )
        elif e["prev_hash"] != prev:
            found.append(
                Problem(
                    Finding.EDITED,
                    f"seq {seq}: its prev_hash is not entry {seq - 1}'s hash: the chain was "
                    "re-linked",
                    seq,
                )
            )
        if entry_hash(e, seq, e["prev_hash"]) != e["hash"]:
            found.append(
                Problem(
                    Finding.EDITED,
                    f"seq {seq} (audit id {e['id']}): content changed after sealing",
                    seq,
                )
            )
        prev, expected = e["hash"], seq + 1
        hashes[seq] = e["hash"]
    return hashes, expected - 1


def _signed(cp: Checkpoint, signatures: Signatures, found: list[Problem], *, where: str) -> bool:
    if not signatures.knows(cp.key_id):
        found.append(
            Problem(
                Finding.RESIGNED,
                f"{where} {cp.seq} is signed by key {cp.key_id[:40]}, which is not a pinned "
                "checkpoint key",
                cp.seq,
            )
        )
        return False
    if not signatures.verifies(cp.key_id, checkpoint_message(cp.seq, cp.hash), cp.signature):
        found.append(
            Problem(
                Finding.RESIGNED,
                f"{where} {cp.seq}: its signature does not verify with pinned key {cp.key_id} "
                "(forged, or its seq or hash altered)",
                cp.seq,
            )
        )
        return False
    return True


def _export(
    export: ExportRead,
    signatures: Signatures,
    db: Mapping[int, Checkpoint],
    untrusted: Set[int],
    found: list[Problem],
) -> tuple[dict[int, Checkpoint], list[str]]:
    if export.missing is not None:
        found.append(
            Problem(
                Finding.EXPORT,
                f"{export.missing}: truncation and re-signed checkpoints cannot be ruled out",
            )
        )
        return {}, []
    for line in export.unreadable:
        found.append(Problem(Finding.EXPORT, f"export line {line} is not a checkpoint record"))
    exported: dict[int, Checkpoint] = {}
    for rec in export.records:
        if not _signed(rec, signatures, found, where="exported checkpoint"):
            continue
        earlier = exported.get(rec.seq)
        if earlier is not None and not earlier.same_as(rec):
            found.append(
                Problem(
                    Finding.EXPORT,
                    f"the export holds two different checkpoints for seq {rec.seq}",
                    rec.seq,
                )
            )
            continue
        exported.setdefault(rec.seq, rec)
    notes: list[str] = []
    newest = max(exported, default=0)
    pending = sorted(s for s in db if s not in exported and s > newest)
    if pending:
        notes.append(
            f"{len(pending)} checkpoint(s) from seq {pending[0]} on are not exported yet "
            "(the sealer exports each after its commit)"
        )
    for seq in sorted(s for s in db if s not in exported and s <= newest and s not in untrusted):
        found.append(
            Problem(
                Finding.EXPORT,
                f"checkpoint {seq} is in the database but not in the export: added afterwards, "
                "or the export lost it",
                seq,
            )
        )
    return exported, notes


def _truncation(
    last: int,
    db: Mapping[int, Checkpoint],
    signed: int,
    exported: Mapping[int, Checkpoint],
    found: list[Problem],
) -> None:
    """The export (or a checkpoint with a pinned signature) proves how far the chain went."""
    proof = max(exported, default=0)
    source = f"exported checkpoint {proof}"
    if signed > proof:
        proof, source = signed, f"signed checkpoint {signed} in the database"
    if proof <= last:
        return
    gone = sorted(s for s in exported if s > last and s not in db)
    also = (
        f"; checkpoint(s) {', '.join(map(str, gone))} are gone from the database too"
        if gone
        else ""
    )
    found.append(
        Problem(
            Finding.TRUNCATED,
            f"truncated since seq {last + 1}: the chain ends at seq {last}, but {source} "
            f"proves entries up to seq {proof} existed{also}",
            last + 1,
        )
    )


def _against_export(
    last: int,
    hashes: Mapping[int, str],
    db: Mapping[int, Checkpoint],
    untrusted: Set[int],
    exported: Mapping[int, Checkpoint],
    found: list[Problem],
) -> None:
    """Each exported checkpoint against the database's, and the chain's first divergence."""
    diverged = False
    previous = 0
    for seq in sorted(exported):
        rec = exported[seq]
        mine = db.get(seq)
        if mine is None and seq <= last:
            found.append(
                Problem(
                    Finding.DELETED,
                    f"checkpoint {seq} was deleted from the database (the export has it)",
                    seq,
                )
            )
        elif mine is not None and mine.seq not in untrusted and not mine.same_as(rec):
            found.append(
                Problem(
                    Finding.RESIGNED,
                    f"checkpoint {seq} in the database (hash {mine.hash[:12]}…, key "
                    f"{mine.key_id[:40]}) is not the exported one (hash {rec.hash[:12]}…, key "
                    f"{rec.key_id}): it was re-signed",
                    seq,
                )
            )
        stored = hashes.get(seq)
        if not diverged and stored is not None and stored != rec.hash:
            diverged = True
            found.append(
                Problem(
                    Finding.EDITED,
                    f"the chain's hash at seq {seq} is not the exported checkpoint's: an entry "
                    f"in seq {previous + 1}–{seq} was changed and the chain re-linked after it",
                    previous + 1,
                )
            )
        previous = seq
