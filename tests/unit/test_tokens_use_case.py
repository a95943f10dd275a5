"""Issuing, listing and revoking API tokens and the per-request revocation check
(broker/services/tokens.py) on fakes: what is recorded and audited, who may revoke what,
and that a register that cannot be read refuses the request (the same flows run on a
database in tests/integration/test_token_register.py)."""

from __future__ import annotations

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import NotFound, Unavailable
from broker.ports.registry import Hospital
from broker.security.tokens import InvalidToken, IssuedToken, IssuerKey, Lifetimes, TokenIssuer
from broker.services import tokens as token_service
from tests.fakes import FakeAccessLookups, FakeAccessUnitOfWork, FakeHospitalRegistry

SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
ADMIN_H002 = Actor("it.qian", Role.ADMIN, "H002")
ISSUER = TokenIssuer(IssuerKey.generate(), Lifetimes())


def access() -> FakeAccessUnitOfWork:
    return FakeAccessUnitOfWork(
        FakeHospitalRegistry(
            Hospital("H001", "H001", "510502", "3"), Hospital("H002", "H002", "510502", "2")
        )
    )


async def issue(uow: FakeAccessUnitOfWork, subject: str, hospital: str) -> IssuedToken:
    return await token_service.issue(
        uow, ISSUER, SECURITY, subject=subject, role=Role.DOCTOR, hospital=hospital
    )


async def test_issuing_records_the_token_and_audits_it_in_one_commit() -> None:
    uow = access()
    issued = await issue(uow, "dr.li", "H001")
    recorded = uow.tokens.tokens[issued.jti]
    assert (recorded.subject, recorded.hospital, recorded.issued_by) == (
        "dr.li",
        "H001",
        "sec.chen",
    )
    assert [c["action"] for c in uow.changes.changes] == ["token.issue"]
    assert uow.changes.changes[0]["detail"]["jti"] == issued.jti
    assert issued.token not in str(uow.changes.changes)  # never the token text
    assert uow.commits == 1


async def test_a_token_for_an_unregistered_hospital_is_not_issued() -> None:
    uow = access()
    with pytest.raises(ValueError, match="'H404' is not registered"):
        await issue(uow, "dr.li", "H404")
    assert uow.tokens.tokens == {} and uow.changes.changes == [] and uow.commits == 0


async def test_only_a_security_admin_issues() -> None:
    with pytest.raises(Forbidden):
        await token_service.issue(
            access(), ISSUER, ADMIN_H002, subject="dr.li", role=Role.DOCTOR, hospital="H002"
        )


async def test_revoking_one_token_is_audited_once_and_final() -> None:
    uow = access()
    issued = await issue(uow, "dr.li", "H001")
    assert await token_service.revoke(uow, SECURITY, jti=issued.jti, reason=" lost ") == [
        issued.jti
    ]
    revoked = uow.tokens.tokens[issued.jti]
    assert (revoked.revoked_by, revoked.reason) == ("sec.chen", "lost")
    again = await token_service.revoke(uow, SECURITY, jti=issued.jti, reason="again")
    assert again == []
    assert [c["action"] for c in uow.changes.changes] == ["token.issue", "token.revoke"]


async def test_a_hospital_admin_revokes_only_their_own_hospitals_tokens() -> None:
    uow = access()
    at_h001 = await issue(uow, "dr.li", "H001")
    at_h002 = await issue(uow, "dr.li", "H002")
    with pytest.raises(Forbidden):
        await token_service.revoke(uow, ADMIN_H002, jti=at_h001.jti, reason="x")
    # By subject, a hospital admin's revocation reaches their hospital's tokens only.
    revoked = await token_service.revoke(uow, ADMIN_H002, subject="dr.li", reason="left")
    assert revoked == [at_h002.jti]
    assert uow.tokens.tokens[at_h001.jti].revoked_at is None
    listed = await token_service.listed(uow, ADMIN_H002)
    assert [t.jti for t in listed] == [at_h002.jti]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"reason": "x"}, "not both or neither"),
        ({"jti": "j", "subject": "s", "reason": "x"}, "not both or neither"),
        ({"jti": "j", "reason": "  "}, "give a reason"),
    ],
)
async def test_a_malformed_revocation_is_refused(args: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await token_service.revoke(access(), SECURITY, **args)


async def test_revoking_an_unknown_token_is_not_found() -> None:
    uow = access()
    with pytest.raises(NotFound):
        await token_service.revoke(uow, SECURITY, jti="nope", reason="x")
    assert uow.changes.changes == []


async def test_live_only_lists_neither_revoked_nor_expired_tokens() -> None:
    uow = access()
    kept = await issue(uow, "dr.li", "H001")
    gone = await issue(uow, "dr.wu", "H001")
    await token_service.revoke(uow, SECURITY, jti=gone.jti, reason="x")
    assert {t.jti for t in await token_service.listed(uow, SECURITY)} == {kept.jti, gone.jti}
    assert [t.jti for t in await token_service.listed(uow, SECURITY, live_only=True)] == [kept.jti]


async def test_the_revocation_check_refuses_revoked_and_unrecorded_tokens() -> None:
    uow = access()
    issued = await issue(uow, "dr.li", "H001")
    check = token_service.RevocationCheck(FakeAccessLookups(uow), cache_seconds=0)
    await check.check(issued.jti)
    await token_service.revoke(uow, SECURITY, jti=issued.jti, reason="x")
    with pytest.raises(token_service.TokenRevoked):
        await check.check(issued.jti)
    with pytest.raises(InvalidToken, match="never issued here"):
        await check.check("forged")


async def test_a_good_answer_is_reused_within_the_cache_time_and_a_revoked_one_for_good() -> None:
    uow = access()
    issued = await issue(uow, "dr.li", "H001")
    lookups = FakeAccessLookups(uow)
    cached = token_service.RevocationCheck(lookups, cache_seconds=3600)
    await cached.check(issued.jti)
    await cached.check(issued.jti)
    assert lookups.reads == 1
    cached.revoked([issued.jti])  # revoked by this process: refused without a look-up
    with pytest.raises(token_service.TokenRevoked):
        await cached.check(issued.jti)
    assert lookups.reads == 1
    uncached = token_service.RevocationCheck(lookups, cache_seconds=0)
    await uncached.check(issued.jti)
    await uncached.check(issued.jti)
    assert lookups.reads == 3


async def test_an_unreadable_register_refuses_rather_than_passes() -> None:
    uow = access()
    issued = await issue(uow, "dr.li", "H001")
    lookups = FakeAccessLookups(uow)
    lookups.down = True
    with pytest.raises(Unavailable, match="token register cannot be read"):
        await token_service.RevocationCheck(lookups, cache_seconds=0).check(issued.jti)
