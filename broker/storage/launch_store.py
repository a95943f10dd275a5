"""HIS launch state (broker/services/his_launch.py) in its own tables
(broker/storage/launch_tables.py): the launch sessions and the checks they ran.

A launch JWT's own jti is spent in the CDS replay store (`cds_jti`) by
broker/cdshooks/auth.py like any CDS call's; nothing else of a launch is kept there.
No row holds a patient identifier in clear: the launch is sealed by the service.
Expired sessions and checks are purged whenever a session opens.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.correlation import current_request_id
from broker.ports.his_launch import LaunchSessionRecord, LaunchStore
from broker.storage.audit_log import ADMINISTRATION
from broker.storage.cds_tables import cds_client
from broker.storage.launch_tables import his_launch_check, his_launch_session
from broker.storage.tables import audit_event, recognition_check, recognition_outcome


class SqlLaunchStore(LaunchStore):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def open_session(self, session_hash: str, record: LaunchSessionRecord) -> None:
        async with self._sessions() as s, s.begin():
            now = record.created_at
            await s.execute(
                delete(his_launch_session).where(his_launch_session.c.expires_at <= now)
            )
            await s.execute(delete(his_launch_check).where(his_launch_check.c.expires_at <= now))
            await s.execute(
                his_launch_session.insert().values(
                    id_hash=session_hash,
                    issuer=record.issuer,
                    hospital_id=record.hospital,
                    user_id=record.user[:200],
                    launch=record.sealed_launch,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                )
            )

    async def live_session(self, session_hash: str, now: datetime) -> LaunchSessionRecord | None:
        t = his_launch_session.c
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(t.issuer, t.hospital_id, t.user_id, t.launch, t.created_at, t.expires_at)
                    .join(cds_client, cds_client.c.issuer == t.issuer)
                    .where(
                        t.id_hash == session_hash,
                        t.expires_at > now,
                        cds_client.c.revoked_at.is_(None),
                    )
                )
            ).first()
        if row is None:
            return None
        return LaunchSessionRecord(
            issuer=row.issuer,
            hospital=row.hospital_id,
            user=row.user_id,
            sealed_launch=bytes(row.launch),
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    async def bind_check(
        self,
        session_hash: str,
        issuer: str,
        hospital: str,
        check_id: str,
        *,
        readable_until: datetime,
    ) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                his_launch_check.insert().values(
                    check_id=check_id,
                    session_hash=session_hash,
                    issuer=issuer,
                    hospital_id=hospital,
                    expires_at=readable_until,
                )
            )

    async def session_ran(self, session_hash: str, check_id: str, now: datetime) -> bool:
        c, t = his_launch_check.c, his_launch_session.c
        async with self._sessions() as s:
            found = await s.scalar(
                select(c.check_id)
                .join(his_launch_session, t.id_hash == c.session_hash)
                .where(c.check_id == check_id, c.session_hash == session_hash, t.expires_at > now)
            )
        return found is not None

    async def client_launched(self, issuer: str, check_id: str, now: datetime) -> bool:
        c = his_launch_check.c
        async with self._sessions() as s:
            found = await s.scalar(
                select(c.check_id).where(
                    c.check_id == check_id, c.issuer == issuer, c.expires_at > now
                )
            )
        return found is not None

    async def check_record(
        self, check_id: str
    ) -> tuple[str, list[dict[str, object]], list[dict[str, object]]] | None:
        """(ordering hospital, stored items, outcome rows) of a check, or None."""
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(
                        recognition_check.c.ordering_hospital, recognition_check.c["items"]
                    ).where(recognition_check.c.id == check_id)
                )
            ).first()
            if row is None:
                return None
            o = recognition_outcome.c
            outcomes = await s.execute(
                select(
                    o.item_index, o.outcome, o.reason, o.catalog_code, o.recorded_by, o.recorded_at
                )
                .where(o.check_id == check_id)
                .order_by(o.item_index)
            )
            return (
                str(row.ordering_hospital),
                list(row._mapping["items"] or []),
                [dict(r._mapping) for r in outcomes],
            )

    async def record_launch(
        self, *, action: str, actor: str, role: str, hospital: str | None, detail: dict[str, object]
    ) -> None:
        """An audit entry for a launch, its refusal included (the caller of a refused launch
        is no Actor: an unknown issuer has no hospital), without any patient identifier."""
        async with self._sessions() as s, s.begin():
            await s.execute(
                audit_event.insert().values(
                    at=datetime.now(UTC),
                    actor=actor[:200],
                    role=role[:32],
                    hospital_id=hospital,
                    action=action[:64],
                    purpose=ADMINISTRATION,
                    detail=detail,
                    request_id=current_request_id(),
                )
            )
