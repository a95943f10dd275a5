"""The adapter's outbox: every message is stored before it is sent, until its receipt.

SQLite at the hospital (synchronous=FULL): a crash or a broker that loses what it held
(the embedded one keeps messages in memory only) never loses a result; the adapter
resends after a timeout and the broker de-duplicates by message id. Values and their
origin (file names can name patients) are sealed with an adapter-local AES-GCM key and
erased once the receipt arrives; what remains is the outcome and its reason. Only a
receipt the broker signed settles a message (adapters/common/receipts.py); refused ones
are counted here, per hospital and reason, for `mrb adapter status`. A rejected message
that the broker later replays from its dead letters is settled again by its `indexed`
receipt (delivered, `replayed_from` its code); the outbox keeps how far it has read the
receipts topic so that receipt is found even if it came while the adapter was down.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.common.envelope import OutgoingMessage
from adapters.common.receipts import Refusal

logger = logging.getLogger(__name__)

PENDING, DELIVERED, REJECTED = "pending", "delivered", "rejected"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    hospital TEXT NOT NULL,
    state TEXT NOT NULL,
    sealed BLOB,               -- nonce || AES-GCM(value, key, headers); erased on receipt
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    completed_at TEXT,
    outcome TEXT,              -- indexed | duplicate | rejected
    error_code TEXT,
    error_detail TEXT,
    origin_sealed BLOB,        -- where it came from (file names may name patients); kept
    replayed_from TEXT         -- delivered after a rejection with this code (a DLQ replay)
);
CREATE INDEX IF NOT EXISTS ix_outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS receipt_offsets (  -- how far mrb.receipts.v1 was read
    partition INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS receipt_refusals (  -- receipts not believed (docs/security.md)
    hospital TEXT NOT NULL,
    reason TEXT NOT NULL,      -- unsigned | unknown-key | bad-signature | other-hospital | ...
    count INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    last_message_id TEXT NOT NULL,
    last_key_id TEXT,
    last_detail TEXT NOT NULL,
    PRIMARY KEY (hospital, reason)
);
"""


@dataclass(frozen=True)
class Entry:
    message: OutgoingMessage
    origin: str  # file, or file:line
    attempts: int


@dataclass(frozen=True)
class Settled:
    message_id: str
    hospital: str
    state: str
    outcome: str | None
    error_code: str | None
    error_detail: str | None
    origin: str
    attempts: int
    completed_at: str | None


@dataclass(frozen=True)
class RefusalCount:
    """Receipts refused for one hospital's messages, for one reason."""

    hospital: str
    reason: str
    count: int
    last_at: str
    last_message_id: str
    last_key_id: str | None
    last_detail: str


def backoff(attempts: int, first: timedelta, cap: timedelta = timedelta(minutes=10)) -> timedelta:
    """Wait before resending: first, then doubling, at most `cap`."""
    wait: timedelta = first * (2 ** max(0, attempts - 1))
    return min(wait, cap)


class Outbox:
    """One SQLite file per adapter data dir; safe to reopen after a crash."""

    def __init__(self, path: Path, key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # stored means on disk before sending
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        if "replayed_from" not in columns:  # an outbox file made before DLQ replays settled
            self._db.execute("ALTER TABLE outbox ADD COLUMN replayed_from TEXT")
        self._aead = AESGCM(key)

    def close(self) -> None:
        self._db.close()

    def add(self, items: Iterable[tuple[OutgoingMessage, str]]) -> int:
        """Store messages (with where they came from) as pending, in one transaction."""
        now = _iso(datetime.now(UTC))
        rows = [
            (
                m.message_id,
                m.hospital,
                PENDING,
                self._seal(m),
                now,
                now,
                self._seal_text(origin, m.message_id),
            )
            for m, origin in items
        ]
        with self._tx():
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (message_id, hospital, state, sealed, "
                "next_attempt_at, created_at, origin_sealed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        for row in rows:  # the message id follows it to the broker and back (its receipt)
            logger.info("message stored", extra={"message_id": row[0], "hospital": row[1]})
        return len(rows)

    def due(self, hospital: str | None, now: datetime, limit: int = 1000) -> list[Entry]:
        """Pending messages whose (re)send time has come, oldest first."""
        rows = self._db.execute(
            "SELECT message_id, sealed, origin_sealed, attempts FROM outbox WHERE state = ? "
            "AND next_attempt_at <= ? AND (? IS NULL OR hospital = ?) "
            "ORDER BY created_at, message_id LIMIT ?",
            (PENDING, _iso(now), hospital, hospital, limit),
        ).fetchall()
        return [
            Entry(self._open(mid, sealed), self._open_text(origin, mid), attempts)
            for mid, sealed, origin, attempts in rows
        ]

    def mark_sent(self, message_ids: Iterable[str], now: datetime, first: timedelta) -> None:
        with self._tx():
            for mid in message_ids:
                (attempts,) = self._db.execute(
                    "SELECT attempts FROM outbox WHERE message_id = ?", (mid,)
                ).fetchone()
                wait = backoff(attempts + 1, first)
                self._db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, sent_at = ?, "
                    "next_attempt_at = ? WHERE message_id = ? AND state = ?",
                    (_iso(now), _iso(now + wait), mid, PENDING),
                )

    def settle(
        self, message_id: str, outcome: str, error_code: str | None, error_detail: str | None
    ) -> bool:
        """Record a receipt and erase the sealed value; False if nothing changed here.

        A pending message takes the receipt's outcome. A rejected one becomes delivered
        when an `indexed` or `duplicate` receipt follows (the broker replayed it from its
        dead letters after a fix); `replayed_from` keeps the code it was rejected with.
        """
        state = REJECTED if outcome == "rejected" else DELIVERED
        with self._tx():
            if state == DELIVERED:
                replayed = self._db.execute(
                    "UPDATE outbox SET state = ?, outcome = ?, replayed_from = error_code, "
                    "error_code = NULL, error_detail = NULL, completed_at = ? "
                    "WHERE message_id = ? AND state = ?",
                    (DELIVERED, outcome, _iso(datetime.now(UTC)), message_id, REJECTED),
                )
                if replayed.rowcount == 1:
                    return True
            done = self._db.execute(
                "UPDATE outbox SET state = ?, outcome = ?, error_code = ?, error_detail = ?, "
                "completed_at = ?, sealed = NULL WHERE message_id = ? AND state = ?",
                (
                    state,
                    outcome,
                    error_code,
                    error_detail,
                    _iso(datetime.now(UTC)),
                    message_id,
                    PENDING,
                ),
            )
        return done.rowcount == 1

    def record_refusal(self, refusal: Refusal) -> None:
        """Count a refused receipt (per hospital and reason); the message stays pending."""
        with self._tx():
            self._db.execute(
                "INSERT INTO receipt_refusals (hospital, reason, count, last_at, "
                "last_message_id, last_key_id, last_detail) VALUES (?, ?, 1, ?, ?, ?, ?) "
                "ON CONFLICT (hospital, reason) DO UPDATE SET count = count + 1, "
                "last_at = excluded.last_at, last_message_id = excluded.last_message_id, "
                "last_key_id = excluded.last_key_id, last_detail = excluded.last_detail",
                (
                    refusal.hospital,
                    refusal.reason,
                    _iso(datetime.now(UTC)),
                    refusal.message_id,
                    refusal.key_id,
                    refusal.detail[:500],
                ),
            )

    def refusals(self, hospital: str | None = None) -> list[RefusalCount]:
        rows = self._db.execute(
            "SELECT hospital, reason, count, last_at, last_message_id, last_key_id, last_detail "
            "FROM receipt_refusals WHERE (? IS NULL OR hospital = ?) ORDER BY hospital, reason",
            (hospital, hospital),
        )
        return [RefusalCount(*row) for row in rows.fetchall()]

    def pending_hospitals(self, hospital: str | None = None) -> dict[str, str]:
        """Pending message ids and the hospital each was sent as (to check its receipt)."""
        rows = self._db.execute(
            "SELECT message_id, hospital FROM outbox WHERE state = ? "
            "AND (? IS NULL OR hospital = ?)",
            (PENDING, hospital, hospital),
        )
        return dict(rows.fetchall())

    def awaiting_receipts(self, hospital: str | None = None) -> dict[str, str]:
        """Message ids a receipt may still settle, with the hospital each was sent as:
        pending ones, and rejected ones (a replay after a fix may still index them)."""
        rows = self._db.execute(
            "SELECT message_id, hospital FROM outbox WHERE state IN (?, ?) "
            "AND (? IS NULL OR hospital = ?)",
            (PENDING, REJECTED, hospital, hospital),
        )
        return dict(rows.fetchall())

    def receipt_positions(self) -> dict[int, int]:
        """Per partition of mrb.receipts.v1, the next offset to read (empty: never read)."""
        rows = self._db.execute("SELECT partition, next_offset FROM receipt_offsets")
        return {int(p): int(o) for p, o in rows.fetchall()}

    def save_receipt_positions(self, positions: dict[int, int]) -> None:
        if not positions:
            return
        with self._tx():
            self._db.executemany(
                "INSERT INTO receipt_offsets (partition, next_offset) VALUES (?, ?) "
                "ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset",
                sorted(positions.items()),
            )

    def replayed_count(self, hospital: str | None = None) -> int:
        """Delivered messages that had been rejected before (settled by a DLQ replay)."""
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = ? AND replayed_from IS NOT NULL "
            "AND (? IS NULL OR hospital = ?)",
            (DELIVERED, hospital, hospital),
        ).fetchone()
        return int(n)

    def pending_ids(self, hospital: str | None = None) -> set[str]:
        rows = self._db.execute(
            "SELECT message_id FROM outbox WHERE state = ? AND (? IS NULL OR hospital = ?)",
            (PENDING, hospital, hospital),
        )
        return {r[0] for r in rows}

    def counts(self, hospital: str | None = None) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT state, COUNT(*) FROM outbox WHERE (? IS NULL OR hospital = ?) GROUP BY state",
            (hospital, hospital),
        )
        return {PENDING: 0, DELIVERED: 0, REJECTED: 0, **dict(rows.fetchall())}

    def listing(self, state: str, hospital: str | None = None, limit: int = 50) -> list[Settled]:
        rows = self._db.execute(
            "SELECT message_id, hospital, state, outcome, error_code, error_detail, "
            "origin_sealed, attempts, completed_at FROM outbox WHERE state = ? "
            "AND (? IS NULL OR hospital = ?) ORDER BY created_at DESC LIMIT ?",
            (state, hospital, hospital, limit),
        )
        return [
            Settled(mid, h, st, out, code, detail, self._open_text(origin, mid), n, done)
            for mid, h, st, out, code, detail, origin, n, done in rows.fetchall()
        ]

    def _seal(self, m: OutgoingMessage) -> bytes:
        doc = {
            "value": m.value.hex(),
            "key": m.key.hex(),
            "hospital": m.hospital,
            "content_type": m.content_type,
            "key_id": m.key_id,
            "signature": m.signature,
        }
        return self._seal_text(json.dumps(doc), m.message_id)

    def _open(self, message_id: str, sealed: bytes) -> OutgoingMessage:
        doc = json.loads(self._open_text(sealed, message_id))
        return OutgoingMessage(
            hospital=doc["hospital"],
            value=bytes.fromhex(doc["value"]),
            key=bytes.fromhex(doc["key"]),
            message_id=message_id,
            content_type=doc["content_type"],
            key_id=doc["key_id"],
            signature=doc["signature"],
        )

    def _seal_text(self, text: str, message_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, text.encode(), message_id.encode())

    def _open_text(self, sealed: bytes, message_id: str) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], message_id.encode()).decode()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
