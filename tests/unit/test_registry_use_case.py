"""The hospital registry (broker/services/registry.py) on fakes: adding and replacing
hospitals, certifications and signing keys, each audited with what changed, and refusals
that leave nothing behind (the same flows run on a database in
tests/integration/test_signatures.py and tests/e2e/test_access_matrix.py)."""

from __future__ import annotations

import base64
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.ports.registry import Hospital, HospitalExists
from broker.services import registry as registry_service
from broker.services.registry import RegistryError
from tests.fakes import FakeHospitalRegistry, FakeRegistryUnitOfWork
from tests.unit.test_recognition_rules import CATALOG

PLATFORM = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
QC = Actor("qc.sun", Role.QC, ALL_HOSPITALS)
H001 = Hospital("H001", "泸州市人民医院", "510502", "3", grade="A", ownership="公立")


def public_b64() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def registered() -> FakeRegistryUnitOfWork:
    return FakeRegistryUnitOfWork(
        FakeHospitalRegistry(Hospital("H001", "H001", "510502", "3", grade="甲"))
    )


async def test_adding_a_hospital_stores_it_normalised_and_audits_it() -> None:
    uow = FakeRegistryUnitOfWork()
    clean = await registry_service.register(uow, H001, by=PLATFORM)
    assert (clean.grade, clean.ownership) == ("甲", "public")
    assert uow.hospitals.hospitals == {"H001": clean}
    [change] = uow.changes.changes
    assert change["action"] == "registry.hospital.add"
    assert change["detail"]["before"] is None
    assert change["detail"]["after"]["grade"] == "甲"
    assert uow.commits == 1


async def test_a_registered_hospital_is_replaced_only_when_asked() -> None:
    uow = registered()
    with pytest.raises(HospitalExists):
        await registry_service.register(uow, H001, by=PLATFORM)
    assert uow.changes.changes == [] and uow.commits == 0
    moved = Hospital("H001", "H001", "510503", "3", alliances=frozenset({"川南"}))
    await registry_service.register(uow, moved, by=PLATFORM, replace=True)
    assert uow.hospitals.hospitals["H001"].region == "510503"
    [change] = uow.changes.changes
    assert change["action"] == "registry.hospital.replace"
    assert change["detail"]["before"]["region"] == "510502"
    assert change["detail"]["after"]["alliances"] == ["川南"]


@pytest.mark.parametrize(
    ("hospital", "message"),
    [
        (Hospital("H 1", "x", "510502", "3"), "id must be"),
        (Hospital("H001", "x", "5105", "4"), "level must be"),
        (Hospital("H001", "x", "51050", "3"), "region must be"),
        (Hospital("H001", "x", "510502", "3", grade="丙"), "grade must be"),
        (Hospital("H001", "x", "510502", "3", ownership="mixed"), "ownership must be"),
        (Hospital("H001", "x", "510502", "3", timezone="Mars/Olympus"), "unknown time zone"),
    ],
)
async def test_an_invalid_registration_is_refused_and_leaves_nothing(
    hospital: Hospital, message: str
) -> None:
    uow = FakeRegistryUnitOfWork()
    with pytest.raises(RegistryError, match=message):
        await registry_service.register(uow, hospital, by=PLATFORM)
    assert uow.hospitals.hospitals == {} and uow.changes.changes == []


async def test_only_a_platform_admin_registers() -> None:
    with pytest.raises(Forbidden):
        await registry_service.register(
            FakeRegistryUnitOfWork(), H001, by=Actor("it.zhou", Role.ADMIN, "H001")
        )


async def test_a_signing_key_is_added_checked_and_revoked_once() -> None:
    uow = registered()
    key = public_b64()
    await registry_service.add_key(uow, "H001", "k1", key, by=PLATFORM)
    assert uow.hospitals.keys == {("H001", "k1"): (key, False)}
    with pytest.raises(RegistryError, match="already registered"):
        await registry_service.add_key(uow, "H001", "k1", public_b64(), by=PLATFORM)
    await registry_service.revoke_key(uow, "H001", "k1", by=PLATFORM)
    assert uow.hospitals.keys == {("H001", "k1"): (key, True)}
    with pytest.raises(RegistryError, match="no active key"):
        await registry_service.revoke_key(uow, "H001", "k1", by=PLATFORM)
    assert [c["action"] for c in uow.changes.changes] == [
        "registry.key.add",
        "registry.key.revoke",
    ]
    assert uow.commits == 2


@pytest.mark.parametrize(
    ("hospital", "key_id", "key", "message"),
    [
        ("H001", "k2", "AAAA", "32 bytes"),
        ("H001", "k2", "not base64!", "not valid base64"),
        ("H001", "", None, "1-64 characters"),
        ("H404", "k2", None, "'H404' is not registered"),
    ],
)
async def test_a_bad_key_is_refused_and_leaves_nothing(
    hospital: str, key_id: str, key: str | None, message: str
) -> None:
    uow = registered()
    with pytest.raises(RegistryError, match=message):
        await registry_service.add_key(uow, hospital, key_id, key or public_b64(), by=PLATFORM)
    assert uow.hospitals.keys == {} and uow.changes.changes == []


async def test_a_certification_is_checked_against_the_catalog_and_audited() -> None:
    uow = registered()
    cert = registry_service.certification(
        CATALOG, "H001", "HEMATOLOGY", "provincial-eqa", date(2026, 1, 1), date(2026, 12, 31)
    )
    await registry_service.certify(uow, cert, "EQA-2026-01", by=QC)
    assert uow.hospitals.certified == [(cert, "EQA-2026-01")]
    [change] = uow.changes.changes
    assert (change["action"], change["detail"]["reference"]) == ("registry.certify", "EQA-2026-01")
    with pytest.raises(RegistryError, match="neither a catalog item nor a QC group"):
        registry_service.certification(
            CATALOG, "H001", "NOPE", "provincial-eqa", date(2026, 1, 1), date(2026, 12, 31)
        )
    with pytest.raises(RegistryError, match="'H404' is not registered"):
        await registry_service.certify(
            uow,
            registry_service.certification(
                CATALOG, "H404", "CT", "provincial-eqa", date(2026, 1, 1), date(2026, 12, 31)
            ),
            None,
            by=QC,
        )
    assert len(uow.changes.changes) == 1
