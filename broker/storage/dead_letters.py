"""Dead letters in the database: rejected messages kept beyond Kafka retention.

A rejection row keeps what a replay needs (the value sealed with the payload key, its
headers, key and origin) and a status: open -> replayed (by whom, when) -> resolved (a
later message with the same id was indexed or answered duplicate), or purged once
`mrb dlq purge` dropped the sealed value. Code, detail and dates always stay.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.storage.one_of import one_of
from broker.storage.tables import rejection

MESSAGE_ID_HEADER = "mrb-message-id"


class Status(StrEnum):
    OPEN = "open"
    REPLAYED = "replayed"
    RESOLVED = "resolved"
    PURGED = "purged"


@dataclass(frozen=True)
class DeadLetter:
    id: int
    message_id: str | None
    hospital: str | None
    code: str
    detail: str
    status: str
    rejected_at: datetime
    replayed_at: datetime | None
    replayed_by: str | None
    replays: int
    resolved_at: datetime | None
    purged_at: datetime | None
    stored: bool  # the sealed value is still here (replayable)


@dataclass(frozen=True)
class Replay:
    """A dead letter claimed for replay: what to send again."""

    id: int
    message_id: str | None
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


def _aad(headers: Mapping[str, bytes]) -> bytes:
    # As the Kafka DLQ copy (broker/ingest/after_commit.py): bound to the message id.
    return headers.get(MESSAGE_ID_HEADER, b"")


def sealed_columns(
    cipher: PayloadCipher, value: bytes, headers: Mapping[str, bytes], key: bytes | None
) -> dict[str, Any]:
    """The columns that keep a rejected message replayable, its value sealed."""
    sealed = cipher.seal(value, associated=_aad(headers))
    return {
        "value_key_id": sealed.key_id,
        "value_algorithm": sealed.algorithm,
        "value_sealed": sealed.nonce + sealed.ciphertext,
        "headers": [[k, base64.b64encode(v).decode()] for k, v in headers.items()],
        "message_key": key,
    }


def stored_headers(stored: Sequence[Sequence[str]] | None) -> list[tuple[str, bytes]]:
    return [(k, base64.b64decode(v)) for k, v in stored or ()]


async def resolve(session: AsyncSession, message_ids: Iterable[str], now: datetime) -> None:
    """Messages indexed (or answered duplicate): their open or replayed dead letters are
    resolved."""
    ids = sorted(set(message_ids))
    if not ids:
        return
    await session.execute(
        update(rejection)
        .where(
            one_of(rejection.c.message_id, ids),
            rejection.c.status.in_([Status.OPEN.value, Status.REPLAYED.value]),
        )
        .values(status=Status.RESOLVED.value, resolved_at=now)
    )


async def listing(
    session: AsyncSession,
    *,
    code: str | None = None,
    hospital: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    t = rejection
    query = select(
        t.c.id,
        t.c.message_id,
        t.c.hospital_id,
        t.c.code,
        t.c.detail,
        t.c.status,
        t.c.rejected_at,
        t.c.replayed_at,
        t.c.replayed_by,
        t.c.replays,
        t.c.resolved_at,
        t.c.purged_at,
        t.c.value_sealed.is_not(None),
    ).order_by(t.c.id)
    if code is not None:
        query = query.where(t.c.code == code)
    if hospital is not None:
        query = query.where(t.c.hospital_id == hospital)
    if status is not None:
        query = query.where(t.c.status == status)
    if limit is not None:
        query = query.limit(limit)
    rows: list[tuple[Any, ...]] = [tuple(r) for r in (await session.execute(query)).all()]
    return [DeadLetter(*r) for r in rows]


async def claim_for_replay(
    session: AsyncSession,
    cipher: PayloadCipher,
    *,
    by: str,
    now: datetime,
    ids: Sequence[int] = (),
    code: str | None = None,
    hospital: str | None = None,
    again: bool = False,
) -> list[Replay]:
    """Mark the chosen dead letters replayed and return them to send, in one UPDATE: two
    replays at once never both take a row. Only open ones (and replayed ones `again`),
    and only those whose sealed value is still stored. The caller sends them before it
    commits, so a failed send leaves them as they were."""
    t = rejection
    statuses = [Status.OPEN.value] + ([Status.REPLAYED.value] if again else [])
    query = (
        update(t)
        .where(t.c.status.in_(statuses), t.c.value_sealed.is_not(None))
        .values(
            status=Status.REPLAYED.value,
            replayed_at=now,
            replayed_by=by[:200],
            replays=t.c.replays + 1,
        )
        .returning(
            t.c.id,
            t.c.message_id,
            t.c.value_key_id,
            t.c.value_algorithm,
            t.c.value_sealed,
            t.c.headers,
            t.c.message_key,
        )
    )
    if ids:
        query = query.where(t.c.id.in_(list(ids)))
    if code is not None:
        query = query.where(t.c.code == code)
    if hospital is not None:
        query = query.where(t.c.hospital_id == hospital)
    rows = sorted((await session.execute(query)).all(), key=lambda r: r.id)
    out = []
    seen: set[str] = set()
    for r in rows:
        if r.message_id is not None:
            if r.message_id in seen:
                continue  # the same message rejected again (an adapter's resend): sent once
            seen.add(r.message_id)
        headers = stored_headers(r.headers)
        blob: bytes = r.value_sealed
        sealed = Sealed(r.value_key_id, r.value_algorithm, blob[:12], blob[12:])
        value = cipher.open(sealed, associated=_aad(dict(headers)))
        out.append(Replay(r.id, r.message_id, value, r.message_key, headers))
    return out


async def purge(session: AsyncSession, *, before: datetime, now: datetime) -> int:
    """Drop the sealed value, headers and key of dead letters rejected before `before`;
    the rows (code, detail, dates, status) stay. Resolved ones stay resolved, the others
    become purged (no longer replayable)."""
    t = rejection
    done = await session.execute(
        update(t)
        .where(t.c.rejected_at < before, t.c.value_sealed.is_not(None))
        .values(
            value_sealed=None,
            value_key_id=None,
            value_algorithm=None,
            headers=None,
            message_key=None,
            purged_at=now,
            status=case(
                (t.c.status == Status.RESOLVED.value, Status.RESOLVED.value),
                else_=Status.PURGED.value,
            ),
        )
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


async def counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(rejection.c.status, func.count()).group_by(rejection.c.status)
    )
    return {status: int(n) for status, n in rows.all()}
