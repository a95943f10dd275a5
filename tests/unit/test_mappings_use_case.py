"""Mapping a hospital's local code (broker/services/mappings.py) on fakes: what is stored,
audited and taken off the worklist, and that every refusal leaves nothing behind (the
same flow runs on a database in tests/integration/test_code_mapping.py)."""

from __future__ import annotations

import pytest

from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import Invalid, NotFound
from broker.ports.registry import Hospital
from broker.services.mappings import add_mapping
from tests.fakes import FakeHospitalRegistry, FakeMappingUnitOfWork
from tests.unit.test_recognition_rules import CATALOG, LOINC

LIS = "urn:mrb:hospital:H001:lab-code"
IT = Actor("it-zhou", Role.ADMIN, "H001")
PLATFORM = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
KEY = ("H001", LIS, "XHB")


def mapping_uow() -> FakeMappingUnitOfWork:
    uow = FakeMappingUnitOfWork(FakeHospitalRegistry(Hospital("H001", "H001", "510502", "3")))
    uow.mappings.indexed[KEY] = 2
    uow.mappings.worklist.add(KEY)
    return uow


async def add(uow: FakeMappingUnitOfWork, by: Actor = IT, **changes: str) -> int:
    args = {"hospital": "H001", "system": LIS, "code": "XHB", "catalog_code": "LAB-HGB"}
    return await add_mapping(uow, CATALOG, by=by, **(args | changes))


async def test_a_mapping_is_stored_audited_and_leaves_the_worklist_in_one_commit() -> None:
    uow = mapping_uow()
    assert await add(uow, code="  XHB ") == 2  # the results already indexed with the code
    assert uow.mappings.codes == {KEY: "LAB-HGB"}
    assert KEY not in uow.mappings.worklist
    assert uow.changes.changes == [
        {
            "actor": "it-zhou",
            "action": "mapping.add",
            "hospital": "H001",
            "detail": {"system": LIS, "code": "XHB", "catalog_code": "LAB-HGB"},
        }
    ]
    assert uow.commits == 1


async def test_a_platform_admin_maps_any_hospitals_codes() -> None:
    uow = mapping_uow()
    await add(uow, by=PLATFORM)
    assert uow.mappings.codes == {KEY: "LAB-HGB"}


@pytest.mark.parametrize(
    ("changes", "refusal", "title"),
    [
        ({"catalog_code": "LAB-NOPE"}, Invalid, "Unknown catalog item"),
        ({"system": LOINC}, Invalid, "Not a local code system"),
        ({"code": "  "}, Invalid, "Empty code"),
        ({"hospital": "H404"}, NotFound, "Unknown hospital"),
    ],
)
async def test_a_bad_mapping_is_refused_and_leaves_nothing(
    changes: dict[str, str], refusal: type[Invalid | NotFound], title: str
) -> None:
    uow = mapping_uow()
    with pytest.raises(refusal) as refused:
        await add(uow, PLATFORM, **changes)  # any hospital's, so H404 is looked up
    assert refused.value.title == title
    assert uow.mappings.codes == {}
    assert uow.mappings.worklist == {KEY}
    assert uow.changes.changes == []
    assert uow.commits == 0


@pytest.mark.parametrize(
    ("by", "message"),
    [
        (Actor("it-li", Role.ADMIN, "H002"), "H001 is another hospital's"),
        (Actor("dr-li", Role.DOCTOR, "H001"), "needs the role admin, platform-admin"),
    ],
)
async def test_only_the_hospitals_admin_or_a_platform_admin_maps(by: Actor, message: str) -> None:
    uow = mapping_uow()
    with pytest.raises(Forbidden, match=message):
        await add(uow, by)
    assert uow.mappings.codes == {} and uow.changes.changes == []
