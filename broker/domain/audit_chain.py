"""The audit trail as a hash chain (pure): each sealed entry commits to all before it.

Entries are sealed in order (`seq`): hash = SHA-256 over the entry's canonical JSON and
the previous hash. Checkpoints sign (seq, hash) with a key kept outside the database, so
rewriting history needs that key as well as write access to the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
# The columns an entry's hash covers, in this order.
FIELDS = (
    "id", "at", "actor", "role", "hospital_id", "action", "purpose",
    "patient_pseudonym", "person_id", "detail",
)  # fmt: skip


def entry_hash(entry: Mapping[str, Any], seq: int, prev_hash: str) -> str:
    body = [seq, prev_hash, *(_plain(entry.get(f)) for f in FIELDS)]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def checkpoint_message(seq: int, hash_: str) -> bytes:
    return f"mrb-audit-checkpoint\n{seq}\n{hash_}".encode()


@dataclass(frozen=True)
class ChainReport:
    sealed: int
    unsealed: int
    checkpoints: int
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[tuple[int, str, bytes]],
    signature_ok: Callable[[bytes, bytes], bool],
    unsealed: int = 0,
) -> ChainReport:
    """Recompute every sealed entry (ordered by seq) and check every checkpoint."""
    problems: list[str] = []
    prev, expected_seq, n = GENESIS, 1, 0
    hashes: dict[int, str] = {}
    for e in entries:
        n += 1
        seq = int(e["seq"])
        if seq != expected_seq:
            problems.append(f"seq {expected_seq} is missing (found {seq}): entries were removed")
        if e["prev_hash"] != prev:
            problems.append(f"seq {seq}: its prev_hash does not match entry {seq - 1}")
        if entry_hash(e, seq, e["prev_hash"]) != e["hash"]:
            problems.append(f"seq {seq} (audit id {e['id']}): content changed after sealing")
        prev, expected_seq = e["hash"], seq + 1
        hashes[seq] = e["hash"]
    count = 0
    for seq, hash_, signature in checkpoints:
        count += 1
        if not signature_ok(checkpoint_message(seq, hash_), signature):
            problems.append(f"checkpoint {seq}: signature does not verify")
        elif hashes.get(seq) != hash_:
            problems.append(f"checkpoint {seq}: the chain no longer has the signed hash there")
    return ChainReport(n, unsealed, count, tuple(problems))
