"""People who log in through OpenID Connect (broker/services/users.py) on fakes: mapping,
re-mapping and disabling them, who may do which, and the Actor each request gets (the
same flows run against a real issuer and database in tests/integration/test_oidc.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import NotAllowed, NotFound, Unavailable
from broker.ports.registry import Hospital
from broker.security.oidc import OidcIdentity
from broker.services import users as user_service
from tests.fakes import FakeAccessLookups, FakeAccessUnitOfWork, FakeHospitalRegistry

IDP = "https://idp.example.org/realms/mrb"
SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
ADMIN_H002 = Actor("it.qian", Role.ADMIN, "H002")
NOW = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)


def access() -> FakeAccessUnitOfWork:
    return FakeAccessUnitOfWork(
        FakeHospitalRegistry(
            Hospital("H001", "H001", "510502", "3"), Hospital("H002", "H002", "510502", "2")
        )
    )


async def map_doctor(uow: FakeAccessUnitOfWork, subject: str, role: Role = Role.DOCTOR) -> None:
    await user_service.map_user(
        uow, SECURITY, issuer=IDP, subject=subject, role=role, hospital="H001"
    )


def identity(subject: str) -> OidcIdentity:
    return OidcIdentity(IDP, subject, "kid", NOW, NOW, token_id="t-1")


async def test_mapping_stores_the_role_and_audits_what_it_replaced() -> None:
    uow = access()
    await map_doctor(uow, "u-wang")
    await map_doctor(uow, "u-wang", Role.ADMIN)
    user = uow.users.users[(IDP, "u-wang")]
    assert (user.role, user.hospital, user.created_by) == ("admin", "H001", "sec.chen")
    first, second = uow.changes.changes
    assert first["action"] == second["action"] == "user.map"
    assert first["detail"]["before"] is None
    assert second["detail"]["before"] == {
        "role": "doctor",
        "user_hospital": "H001",
        "disabled": False,
    }
    assert uow.commits == 2


@pytest.mark.parametrize(
    ("role", "hospital", "message"),
    [
        (Role.ADAPTER, "H001", "machine"),
        (Role.DOCTOR, "H404", "not registered"),
        (Role.DOCTOR, None, "name its one hospital"),
        (Role.AUDIT, "H001", "platform role"),
    ],
)
async def test_a_mapping_that_cannot_work_is_refused_and_leaves_nothing(
    role: Role, hospital: str | None, message: str
) -> None:
    uow = access()
    with pytest.raises(ValueError, match=message):
        await user_service.map_user(
            uow, SECURITY, issuer=IDP, subject="u-x", role=role, hospital=hospital
        )
    assert uow.users.users == {} and uow.changes.changes == [] and uow.commits == 0


async def test_only_a_security_admin_maps_people() -> None:
    with pytest.raises(Forbidden, match="security-admin"):
        await user_service.map_user(
            access(), ADMIN_H002, issuer=IDP, subject="u-x", role=Role.DOCTOR, hospital="H002"
        )


async def test_disabling_is_audited_once_and_the_next_request_is_refused() -> None:
    uow = access()
    lookups = FakeAccessLookups(uow)
    await map_doctor(uow, "u-zhao")
    actor = await user_service.actor_for(lookups, identity("u-zhao"))
    assert (actor.name, actor.role, actor.hospital, actor.token_id) == (
        "u-zhao",
        Role.DOCTOR,
        "H001",
        "oidc:t-1",
    )
    assert await user_service.disable(uow, SECURITY, issuer=IDP, subject="u-zhao", reason="left")
    assert not await user_service.disable(uow, SECURITY, issuer=IDP, subject="u-zhao", reason="x")
    assert [c["action"] for c in uow.changes.changes] == ["user.map", "user.disable"]
    with pytest.raises(NotAllowed) as refused:
        await user_service.actor_for(lookups, identity("u-zhao"))
    assert refused.value.title == "User disabled"
    await map_doctor(uow, "u-zhao")  # mapping again enables the person
    assert (await user_service.actor_for(lookups, identity("u-zhao"))).role is Role.DOCTOR


async def test_a_hospital_admin_disables_only_their_own_hospitals_people() -> None:
    uow = access()
    await map_doctor(uow, "u-zhao")
    with pytest.raises(Forbidden):
        await user_service.disable(uow, ADMIN_H002, issuer=IDP, subject="u-zhao", reason="x")
    with pytest.raises(NotFound):
        await user_service.disable(uow, SECURITY, issuer=IDP, subject="u-nobody", reason="x")
    with pytest.raises(ValueError, match="give a reason"):
        await user_service.disable(uow, SECURITY, issuer=IDP, subject="u-zhao", reason=" ")
    assert uow.users.users[(IDP, "u-zhao")].disabled_at is None
    assert [u.subject for u in await user_service.listed(uow, ADMIN_H002)] == []
    assert [u.subject for u in await user_service.listed(uow, SECURITY)] == ["u-zhao"]


async def test_an_unmapped_person_is_refused_and_an_unreadable_table_is_unavailable() -> None:
    uow = access()
    lookups = FakeAccessLookups(uow)
    with pytest.raises(NotAllowed) as refused:
        await user_service.actor_for(lookups, identity("u-stranger"))
    assert refused.value.title == "User not mapped"
    lookups.down = True
    with pytest.raises(Unavailable):
        await user_service.actor_for(lookups, identity("u-stranger"))
