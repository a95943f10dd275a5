"""Sealing the audit trail into its hash chain, signing checkpoints, verifying it.

Reads are audited inside the request's own transaction, unsealed, so no request waits
for a global lock; the sealer (`mrb audit seal --follow`, or a worker that holds the
sealer key) then links new entries in order. On PostgreSQL an advisory lock keeps
sealers from racing; SQLite has one writer. Database triggers refuse deleting entries,
changing a sealed one and changing an unsealed one other than by sealing it.

Two keys, two places: the sealer holds the Ed25519 private key
(keys/audit-checkpoint.key); everything else, verification included, holds only the
public key, pinned in configuration (MRB_AUDIT_CHECKPOINT_PUBLIC_KEY or
keys/audit-checkpoint.pub). A checkpoint signed by any other key does not verify.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Row, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.audit_chain import (
    GENESIS,
    ChainReport,
    Checkpoint,
    ExportRead,
    checkpoint_message,
    entry_hash,
    verify_chain,
)
from broker.ports.audit_trail import CheckpointSigner
from broker.security.keys import load_key
from broker.storage.audit_export import CheckpointExport
from broker.storage.tables import audit_checkpoint, audit_event

_LOCK = 0x6D72_6261  # "mrba"
PRIVATE_KEY_FILE = "audit-checkpoint.key"
PUBLIC_KEY_FILE = "audit-checkpoint.pub"


class CheckpointKeyError(ValueError):
    """A checkpoint key that is missing, malformed or not the pinned one."""


def key_id_of(raw_public: bytes) -> str:
    return "audit-" + hashlib.sha256(raw_public).hexdigest()[:12]


class PinnedKeys:
    """The checkpoint public keys verification trusts (more than one during a rotation)."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for k in keys:
            raw = k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self._keys[key_id_of(raw)] = k
        if not self._keys:
            raise CheckpointKeyError("no checkpoint public key is pinned")

    @classmethod
    def parse(cls, text_: str, *, source: str) -> PinnedKeys:
        """Base64 raw Ed25519 public keys, separated by commas, spaces or lines."""
        keys = []
        for item in text_.replace(",", " ").split():
            try:
                raw = base64.b64decode(item, validate=True)
                keys.append(Ed25519PublicKey.from_public_bytes(raw))
            except (binascii.Error, ValueError):
                raise CheckpointKeyError(
                    f"{source}: {item[:60]!r} is not a base64 raw Ed25519 public key (32 bytes)"
                ) from None
        if not keys:
            raise CheckpointKeyError(f"{source} holds no public key")
        return cls(keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def public_b64(self) -> tuple[str, ...]:
        return tuple(
            base64.b64encode(
                k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            ).decode()
            for k in self._keys.values()
        )

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    def verifies(self, key_id: str, message: bytes, signature: bytes) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class CheckpointKey:
    """The sealer's Ed25519 private key: a file on the sealer's host, never in the DB."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_b64 = base64.b64encode(raw).decode()
        self.key_id = key_id_of(raw)

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> CheckpointKey:
        """The key at `path`; one created here also gets its public half beside it (.pub)."""
        existed = path.exists()
        key = cls(Ed25519PrivateKey.from_private_bytes(load_key(path, create=create)))
        if not existed:
            key.write_public(path.with_suffix(".pub"))
        return key

    @classmethod
    def from_dir(cls, keys: Path, *, create: bool) -> CheckpointKey:
        """keys/audit-checkpoint.key (and keys/audit-checkpoint.pub when created)."""
        return cls.from_file(keys / PRIVATE_KEY_FILE, create=create)

    def write_public(self, path: Path) -> Path:
        """Write the public key (base64, what other hosts pin) to `path`, replacing it whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.public_b64 + "\n")
        tmp.replace(path)
        return path

    @property
    def pinned(self) -> PinnedKeys:
        return PinnedKeys([self._private.public_key()])

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def pinned_keys(keys: Path, configured: str | None, *, embedded: bool) -> PinnedKeys:
    """The pinned public key(s): MRB_AUDIT_CHECKPOINT_PUBLIC_KEY, else keys/audit-checkpoint.pub.

    Only the embedded set-up, which holds the private key anyway, may fall back to the
    public half of keys/audit-checkpoint.key (writing the .pub it lacked).
    """
    public_file = keys / PUBLIC_KEY_FILE
    if configured:
        pinned = PinnedKeys.parse(configured, source="MRB_AUDIT_CHECKPOINT_PUBLIC_KEY")
        if public_file.exists():
            on_disk = PinnedKeys.parse(public_file.read_text(), source=str(public_file))
            if set(on_disk.key_ids) != set(pinned.key_ids):
                raise CheckpointKeyError(
                    f"MRB_AUDIT_CHECKPOINT_PUBLIC_KEY and {public_file} pin different keys: "
                    "remove one, or make them agree"
                )
        return pinned
    if public_file.exists():
        return PinnedKeys.parse(public_file.read_text(), source=str(public_file))
    if embedded:
        key = CheckpointKey.from_dir(keys, create=True)
        key.write_public(public_file)
        return key.pinned
    raise CheckpointKeyError(
        "no checkpoint public key is pinned: set MRB_AUDIT_CHECKPOINT_PUBLIC_KEY to the "
        f"key `mrb audit key` prints on the sealer host, or put it in {public_file}"
    )


def sealer_key(path: Path, pinned: PinnedKeys | None, *, create: bool) -> CheckpointKey | None:
    """The sealer's private key at `path`, if this host holds it (None if not).

    A key that is not among the pinned ones is refused: its checkpoints would not verify.
    """
    if not path.exists() and not create:
        return None
    key = CheckpointKey.from_file(path, create=create)
    if pinned is not None and not pinned.knows(key.key_id):
        raise CheckpointKeyError(
            f"{path} is key {key.key_id}, which is not the pinned checkpoint key "
            f"({', '.join(pinned.key_ids)}): its checkpoints would not verify"
        )
    return key


async def seal(session: AsyncSession, key: CheckpointSigner, *, limit: int = 5000) -> int:
    """Link the oldest unsealed entries onto the chain and sign a checkpoint at its end."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
    last = (
        await session.execute(
            select(audit_event.c.seq, audit_event.c.hash)
            .where(audit_event.c.seq.is_not(None))
            .order_by(audit_event.c.seq.desc())
            .limit(1)
        )
    ).first()
    seq, prev = (int(last.seq), str(last.hash)) if last else (0, GENESIS)
    pending = (
        await session.execute(
            select(audit_event)
            .where(audit_event.c.seq.is_(None))
            .order_by(audit_event.c.id)
            .limit(limit)
        )
    ).all()
    for row in pending:
        seq += 1
        digest = entry_hash(dict(row._mapping), seq, prev)
        await session.execute(
            update(audit_event)
            .where(audit_event.c.id == row.id)
            .values(seq=seq, prev_hash=prev, hash=digest)
        )
        prev = digest
    if pending:
        await session.execute(
            audit_checkpoint.insert().values(
                seq=seq,
                hash=prev,
                key_id=key.key_id,
                signature=key.sign(checkpoint_message(seq, prev)),
                at=datetime.now(UTC),
            )
        )
    return len(pending)


async def last_checkpoint(session: AsyncSession) -> int:
    """The highest checkpoint seq in the database (0 if none)."""
    found = (await session.execute(select(func.max(audit_checkpoint.c.seq)))).scalar()
    return int(found or 0)


async def checkpoints_after(session: AsyncSession, seq: int) -> list[Checkpoint]:
    """The checkpoints in the database after `seq`, in order (what is left to export)."""
    rows = await session.execute(
        select(audit_checkpoint)
        .where(audit_checkpoint.c.seq > seq)
        .order_by(audit_checkpoint.c.seq)
    )
    return [_checkpoint(r) for r in rows]


async def verify(
    session: AsyncSession,
    pinned: PinnedKeys,
    export: CheckpointExport | None,
) -> ChainReport:
    """Recompute the chain, check checkpoints against the pinned keys and the export."""
    entries = [
        dict(r._mapping)
        for r in await session.execute(
            select(audit_event).where(audit_event.c.seq.is_not(None)).order_by(audit_event.c.seq)
        )
    ]
    checkpoints = [
        _checkpoint(r)
        for r in await session.execute(select(audit_checkpoint).order_by(audit_checkpoint.c.seq))
    ]
    unsealed = (
        await session.execute(
            select(func.count()).select_from(audit_event).where(audit_event.c.seq.is_(None))
        )
    ).scalar_one()
    if export is None:
        exported = ExportRead(
            missing="no checkpoint export is configured (MRB_AUDIT_EXPORT, or --export)"
        )
    else:
        exported = await asyncio.to_thread(export.read)
        if exported.missing is not None and not checkpoints and not entries:
            exported = ExportRead()  # nothing sealed yet, so nothing exported yet
    return verify_chain(entries, checkpoints, pinned, exported, int(unsealed))


def _checkpoint(row: Row[Any]) -> Checkpoint:
    r = row._mapping
    return Checkpoint(
        int(r["seq"]), str(r["hash"]), str(r["key_id"]), bytes(r["signature"]), r["at"]
    )
