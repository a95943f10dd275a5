"""Sealing the audit trail into its hash chain, signing checkpoints, verifying it.

Reads are audited inside the request's own transaction, unsealed, so no request waits
for a global lock; a sealer (in the worker processes, and `mrb audit seal`) then links
new entries in order. On PostgreSQL an advisory lock keeps sealers from racing; SQLite
has one writer. Database triggers refuse deleting entries or changing a sealed one.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.audit_chain import (
    GENESIS,
    ChainReport,
    checkpoint_message,
    entry_hash,
    verify_chain,
)
from broker.security.keys import load_key
from broker.storage.tables import audit_checkpoint, audit_event

_LOCK = 0x6D72_6261  # "mrba"


class CheckpointKey:
    """The Ed25519 key that signs checkpoints: a file in MRB_DATA_DIR/keys, never in the DB."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_b64 = base64.b64encode(raw).decode()
        self.key_id = "audit-" + hashlib.sha256(raw).hexdigest()[:12]

    @classmethod
    def from_dir(cls, keys: Path, *, create: bool) -> CheckpointKey:
        seed = load_key(keys / "audit-checkpoint.key", create=create)
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            self._private.public_key().verify(signature, message)
        except InvalidSignature:
            return False
        return True


async def seal(session: AsyncSession, key: CheckpointKey, *, limit: int = 5000) -> int:
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


async def verify(session: AsyncSession, key: CheckpointKey) -> ChainReport:
    entries = [
        dict(r._mapping)
        for r in await session.execute(
            select(audit_event).where(audit_event.c.seq.is_not(None)).order_by(audit_event.c.seq)
        )
    ]
    checkpoints = [
        (int(r.seq), str(r.hash), bytes(r.signature))
        for r in await session.execute(select(audit_checkpoint).order_by(audit_checkpoint.c.seq))
    ]
    unsealed = (
        await session.execute(
            select(func.count()).select_from(audit_event).where(audit_event.c.seq.is_(None))
        )
    ).scalar_one()
    return verify_chain(entries, checkpoints, key.verifies, int(unsealed))
