"""Received instances' headers on disk, before the PACS hears "success".

The collector waits for a study to go quiet before publishing it; without a spool, an
instance acknowledged with 0x0000 would be lost if the adapter stopped meanwhile, and
a study that gains an instance after a restart would be republished without the
instances received before. Headers (never pixels) are sealed with the adapter's key:
they name the patient. Rows are kept for the collector's retention period.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.dicom.headers import InstanceHeaders, PatientIdHeader

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dicom_spool (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    sealed BLOB NOT NULL,        -- nonce || AES-GCM(headers as JSON)
    received_at TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_dicom_spool_study ON dicom_spool (study_uid);
"""


@dataclasses.dataclass(frozen=True)
class Spooled:
    headers: InstanceHeaders
    received_at: datetime
    published: bool


class Spool:
    def __init__(self, path: Path, key: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # on disk before 0x0000 goes back
        self._db.executescript(_SCHEMA)
        self._aead = AESGCM(key)

    def put(self, headers: InstanceHeaders, received_at: datetime) -> None:
        """Store (or refresh) one instance as not yet published."""
        nonce = secrets.token_bytes(12)
        plain = json.dumps(to_json(headers), ensure_ascii=False).encode()
        sealed = nonce + self._aead.encrypt(nonce, plain, headers.sop_instance_uid.encode())
        self._db.execute(
            "INSERT INTO dicom_spool (sop_uid, study_uid, sealed, received_at, published) "
            "VALUES (?, ?, ?, ?, 0) ON CONFLICT (sop_uid) DO UPDATE SET "
            "sealed = excluded.sealed, published = 0",
            (headers.sop_instance_uid, headers.study_uid, sealed, _ts(received_at)),
        )

    def mark_published(self, study_uid: str, up_to: datetime) -> None:
        """The study's instances received until `up_to` are in the outbox."""
        self._db.execute(
            "UPDATE dicom_spool SET published = 1 WHERE study_uid = ? AND received_at <= ?",
            (study_uid, _ts(up_to)),
        )

    def load(self) -> Iterator[Spooled]:
        """Everything kept, oldest first (to rebuild the collector after a restart)."""
        rows = self._db.execute(
            "SELECT sop_uid, sealed, received_at, published FROM dicom_spool ORDER BY received_at"
        ).fetchall()
        for sop_uid, sealed, received_at, published in rows:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], sop_uid.encode())
            at = datetime.fromisoformat(received_at).replace(tzinfo=UTC)
            yield Spooled(from_json(json.loads(plain)), at, bool(published))

    def purge(self, older_than: timedelta, now: datetime | None = None) -> int:
        """Forget published instances received before `older_than` ago."""
        cutoff = _ts((now or datetime.now(UTC)) - older_than)
        done = self._db.execute(
            "DELETE FROM dicom_spool WHERE published = 1 AND received_at < ?", (cutoff,)
        )
        return done.rowcount

    def pending(self) -> int:
        (n,) = self._db.execute("SELECT count(*) FROM dicom_spool WHERE published = 0").fetchone()
        return int(n)

    def close(self) -> None:
        self._db.close()


def _ts(moment: datetime) -> str:
    """A fixed-width UTC timestamp, so the text compares as the time does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- InstanceHeaders <-> JSON ------------------------------------------------------------


def to_json(h: InstanceHeaders) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(h):
        value = getattr(h, f.name)
        if isinstance(value, PatientIdHeader):
            value = dataclasses.asdict(value)
        elif f.name == "other_patient_ids":
            value = [dataclasses.asdict(p) for p in value]
        elif isinstance(value, datetime):
            value = {"datetime": value.isoformat()}
        elif isinstance(value, date):
            value = {"date": value.isoformat()}
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_json(doc: dict[str, Any]) -> InstanceHeaders:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(InstanceHeaders):
        if f.name not in doc:
            continue
        value = doc[f.name]
        if f.name == "patient":
            value = PatientIdHeader(**value)
        elif f.name == "other_patient_ids":
            value = tuple(PatientIdHeader(**p) for p in value)
        elif isinstance(value, dict) and "datetime" in value:
            value = datetime.fromisoformat(value["datetime"])
        elif isinstance(value, dict) and "date" in value:
            value = date.fromisoformat(value["date"])
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return InstanceHeaders(**values)
