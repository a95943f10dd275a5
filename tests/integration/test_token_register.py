"""The token register on a real database: issuing records, the revocation check's cache,
and what it does when the register cannot be read."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from broker.api.problems import status_of
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import Refused
from broker.security.tokens import InvalidToken
from broker.services import tokens as token_service
from broker.storage.access_uow import SqlAccessLookups
from broker.storage.tables import audit_event, issued_token

SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)


async def test_issuing_records_the_token_but_never_its_text(container: Container) -> None:
    issued = await container.issue_token("dr.li", Role.DOCTOR, "H001", by="sec.chen")
    async with container.sessions() as s:
        row = (await s.execute(select(issued_token))).one()._mapping
        audit = (await s.execute(select(audit_event))).one()._mapping
    assert dict(row) | {"issued_at": None, "expires_at": None} == {
        "jti": issued.jti,
        "subject": "dr.li",
        "role": "doctor",
        "hospital": "H001",
        "kind": "person",
        "key_id": issued.key_id,
        "issued_at": None,
        "expires_at": None,
        "issued_by": "sec.chen",
        "revoked_at": None,
        "revoked_by": None,
        "reason": None,
    }
    assert row["expires_at"] - row["issued_at"] == timedelta(hours=8)
    assert issued.token not in str(dict(row)) and issued.token not in str(dict(audit))
    assert (audit["action"], audit["actor"], audit["role"]) == (
        "token.issue",
        "sec.chen",
        "security-admin",
    )


async def test_only_a_security_admin_issues(container: Container) -> None:
    admin = Actor("it.zhou", Role.ADMIN, "H001")
    with pytest.raises(Forbidden, match="security-admin"):
        await token_service.issue(
            container.access_uow(),
            container.token_issuer(),
            admin,
            subject="dr.li",
            role=Role.DOCTOR,
            hospital="H001",
        )
    with pytest.raises(ValueError, match="not registered"):
        await container.issue_token("dr.li", Role.DOCTOR, "H404", by="sec.chen")


async def test_revocation_is_seen_within_the_cache_window(container: Container) -> None:
    issued = await container.issue_token("dr.li", Role.DOCTOR, "H001", by="sec.chen")
    cached = token_service.RevocationCheck(container.access_lookups(), cache_seconds=0.5)
    uncached = token_service.RevocationCheck(container.access_lookups(), cache_seconds=0)
    await cached.check(issued.jti)
    await uncached.check(issued.jti)
    revoked = await token_service.revoke(
        container.access_uow(), SECURITY, jti=issued.jti, reason="lost"
    )
    assert revoked == [issued.jti]
    with pytest.raises(token_service.TokenRevoked, match="token revoked"):
        await uncached.check(issued.jti)  # no cache: the next request
    await cached.check(issued.jti)  # still within its window
    await asyncio.sleep(0.6)
    with pytest.raises(token_service.TokenRevoked):
        await cached.check(issued.jti)
    with pytest.raises(InvalidToken, match="never issued"):
        await uncached.check("not-a-recorded-jti")


async def test_a_revocation_in_this_process_applies_at_once(container: Container) -> None:
    issued = await container.issue_token("dr.li", Role.DOCTOR, "H001", by="sec.chen")
    check = token_service.RevocationCheck(container.access_lookups(), cache_seconds=5)
    await check.check(issued.jti)
    check.revoked([issued.jti])
    with pytest.raises(token_service.TokenRevoked):
        await check.check(issued.jti)


async def test_the_cache_is_bounded(container: Container) -> None:
    check = token_service.RevocationCheck(
        container.access_lookups(), cache_seconds=5, max_entries=3
    )
    jtis = [
        (await container.issue_token(f"dr.{i}", Role.DOCTOR, "H001", by="sec")).jti
        for i in range(5)
    ]
    for jti in jtis:
        await check.check(jti)
    assert list(check._seen) == jtis[-3:]


async def test_revoking_by_subject_stays_within_the_hospital_admins_scope(
    container: Container,
) -> None:
    own = await container.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
    other = await container.issue_token("dr.li", Role.DOCTOR, "H002", by="sec")
    admin = Actor("it.zhou", Role.ADMIN, "H001")
    with pytest.raises(Forbidden):
        await token_service.revoke(
            container.access_uow(), admin, subject="dr.li", hospital="H002", reason="x"
        )
    revoked = await token_service.revoke(container.access_uow(), admin, subject="dr.li", reason="x")
    assert revoked == [own.jti]  # H002's dr.li is another person
    listed = await token_service.listed(container.access_uow(), SECURITY, live_only=True)
    assert [t.jti for t in listed] == [other.jti]
    with pytest.raises(ValueError, match="reason"):
        await token_service.revoke(container.access_uow(), SECURITY, jti=other.jti, reason=" ")
    with pytest.raises(ValueError, match="not both"):
        await token_service.revoke(
            container.access_uow(), SECURITY, jti=other.jti, subject="dr.li", reason="x"
        )
    with pytest.raises(Refused) as unknown:
        await token_service.revoke(container.access_uow(), SECURITY, jti="nope", reason="x")
    assert status_of(unknown.value) == 404


async def test_an_unreadable_register_refuses_rather_than_passes() -> None:
    engine = create_async_engine("sqlite+aiosqlite:////nonexistent-dir/mrb.db")
    try:
        check = token_service.RevocationCheck(
            SqlAccessLookups(async_sessionmaker(engine)), cache_seconds=0
        )
        with pytest.raises(Refused) as refused:
            await check.check("any")
        assert status_of(refused.value) == 503
    finally:
        await engine.dispose()
