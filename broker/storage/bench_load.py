"""Bulk-writing a synthetic index for the benchmark (`mrb bench load`).

The rows are the ones ingest writes for a new person's messages (broker/ingest/batch.py):
person and pseudonymous links, sealed birth dates, sealed payloads, results with their
sealed business identifier and summary, one current version each, the items, and the
inbox. They are built with the same helpers (Protector, current_fields, item_rows) and
written in bulk: explicit ids instead of RETURNING, so each table is one executemany
per chunk; PostgreSQL's sequences are moved past the ids written at the end.

Only for people that are new to the index: nothing is linked, merged or versioned
against existing rows (the generator guarantees that).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.identifiers import PatientIdentifier
from broker.domain.results import ParsedMessage
from broker.security.payload_cipher import PayloadCipher
from broker.storage.bulk_insert import insert_rows
from broker.storage.people import birth_date_context
from broker.storage.protect import Protector
from broker.storage.results import current_fields, item_rows
from broker.storage.tables import (
    inbox,
    payload,
    person,
    person_birth_date,
    person_link,
    result,
    result_item,
    result_version,
)

# Tables whose integer ids are assigned here, and so whose PostgreSQL sequence must follow.
_NUMBERED = (payload, result_version, result_item)
# Dependency order of the inserts (foreign keys are checked on SQLite).
_ORDER = (person, person_link, person_birth_date, payload, result, result_version, result_item)


@dataclass(frozen=True)
class NewMessage:
    """One message of a new person, as ingest would admit it."""

    message_id: str
    hospital: str
    content_type: str
    value: bytes
    parsed: ParsedMessage


@dataclass
class BulkIndex:
    """Rows staged for a chunk of new people; `flush` writes them in one go."""

    protector: Protector
    cipher: PayloadCipher
    now: datetime
    _next: dict[str, int] = field(default_factory=dict)
    _rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)

    @classmethod
    async def starting_after(
        cls, session: AsyncSession, protector: Protector, cipher: PayloadCipher, now: datetime
    ) -> BulkIndex:
        """A writer whose ids follow the highest already in the database."""
        bulk = cls(protector, cipher, now)
        for table in _NUMBERED:
            top = await session.scalar(select(func.max(table.c.id)))
            bulk._next[table.name] = int(top or 0) + 1
        return bulk

    def add_person(self, messages: Sequence[NewMessage]) -> str:
        """Stage one new person's messages; returns the person id."""
        pid = str(uuid.uuid4())
        self._add(person, {"id": pid, "created_at": self.now, "merged_into": None})
        linked: set[str] = set()
        births: dict[str, Any] = {}
        for m in messages:
            for r in m.parsed.results:
                for key in r.patient.link_keys:
                    self._link(pid, key, linked)
                if r.patient.birth_date is not None:
                    births[m.hospital] = r.patient.birth_date
            self._message(pid, m)
        for hospital, born in births.items():
            sealed = self.cipher.seal(
                born.isoformat().encode(), associated=birth_date_context(pid, hospital)
            )
            self._add(
                person_birth_date,
                {
                    "person_id": pid,
                    "hospital_id": hospital,
                    "key_id": sealed.key_id,
                    "algorithm": sealed.algorithm,
                    "nonce": sealed.nonce,
                    "ciphertext": sealed.ciphertext,
                    "updated_at": self.now,
                },
            )
        return pid

    async def flush(self, session: AsyncSession) -> None:
        """Write the staged rows (the caller commits)."""
        for table in (*_ORDER, inbox):
            rows = self._rows.pop(table.name, None)
            if rows:
                await insert_rows(session, table, rows)
                self.written[table.name] = self.written.get(table.name, 0) + len(rows)

    def _link(self, pid: str, key: PatientIdentifier, linked: set[str]) -> None:
        pseudonym = self.protector.pseudonyms.of(key)
        if pseudonym in linked:
            return
        linked.add(pseudonym)
        self._add(
            person_link,
            {
                "pseudonym": pseudonym,
                "person_id": pid,
                "scope": key.scope.value,
                "hospital_id": key.hospital,
                "national_system": key.national_system,
                "created_at": self.now,
            },
        )

    def _message(self, pid: str, m: NewMessage) -> None:
        sealed = self.cipher.seal(m.value, associated=m.message_id.encode())
        payload_id = self._id(payload)
        self._add(
            payload,
            {
                "id": payload_id,
                "message_id": m.message_id,
                "hospital_id": m.hospital,
                "content_type": m.content_type,
                "sha256": hashlib.sha256(m.value).hexdigest(),
                "size": len(m.value),
                "key_id": sealed.key_id,
                "algorithm": sealed.algorithm,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "received_at": self.now,
            },
        )
        for r in m.parsed.results:
            rid = str(uuid.uuid4())
            self._add(
                result,
                {
                    "id": rid,
                    "hospital_id": m.hospital,
                    "business_id": self.protector.business_key(m.hospital, r.business_id),
                    "business_id_sealed": self.protector.seal_business_id(rid, r.business_id),
                    **current_fields(r, pid, self.now, rid, self.protector),
                },
            )
            self._add(
                result_version,
                {
                    "id": self._id(result_version),
                    "result_id": rid,
                    "message_id": m.message_id,
                    "payload_id": payload_id,
                    "source_time": r.version.source_time,
                    "version_number": r.version.version_number,
                    "version_label": r.version_label,
                    "content_hash": r.content_hash,
                    "status": r.status,
                    "is_current": True,
                    "received_at": self.now,
                },
            )
            for row in item_rows(rid, m.hospital, pid, r.items, self.protector):
                self._add(result_item, {"id": self._id(result_item), **row})
        self._add(
            inbox,
            {
                "message_id": m.message_id,
                "hospital_id": m.hospital,
                "outcome": "indexed",
                "results": len(m.parsed.results),
                "topic": None,
                "partition": None,
                "offset": None,
                "processed_at": self.now,
            },
        )

    def _id(self, table: Table) -> int:
        n = self._next[table.name]
        self._next[table.name] = n + 1
        return n

    def _add(self, table: Table, row: dict[str, Any]) -> None:
        self._rows.setdefault(table.name, []).append(row)


async def follow_sequences(session: AsyncSession) -> None:
    """Move PostgreSQL's id sequences past the ids written explicitly (SQLite needs none:
    its next rowid is always the highest plus one)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for table in _NUMBERED:
        highest = select(func.coalesce(func.max(table.c.id), 1)).scalar_subquery()
        sequence = func.pg_get_serial_sequence(table.name, "id")
        await session.execute(select(func.setval(sequence, highest)))


async def refresh_statistics(session: AsyncSession) -> None:
    """ANALYZE, as autovacuum (PostgreSQL) or an operator (SQLite) would after a large load:
    measured right after a bulk load, the planners would otherwise plan on the statistics of
    an empty database (PostgreSQL then scanned person_birth_date whole on every check)."""
    await session.execute(text("ANALYZE"))


@dataclass(frozen=True)
class IndexFootprint:
    results: int
    bytes: int  # the database's size on disk (SQLite: file, WAL; PostgreSQL: relations)


async def footprint(session: AsyncSession, sqlite_files: Sequence[str] = ()) -> IndexFootprint:
    """How many results the index holds and what it takes on disk."""
    results = int(await session.scalar(select(func.count()).select_from(result)) or 0)
    if session.get_bind().dialect.name == "postgresql":
        size = await session.scalar(
            text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            )
        )
        return IndexFootprint(results, int(size or 0))
    return IndexFootprint(results, await asyncio.to_thread(_file_sizes, sqlite_files))


def _file_sizes(files: Sequence[str]) -> int:
    return sum(os.path.getsize(f) for f in files if os.path.exists(f))
