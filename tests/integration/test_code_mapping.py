"""The unmapped-code worklist and mappings that take effect without a restart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.api.problems import status_of
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.domain.errors import Refused
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from broker.services.mappings import add_mapping
from broker.storage import mappings
from tests import factories as f
from tests.conftest import certify

LIS = "urn:mrb:hospital:H001:lab-code"
PLATFORM_IT = Actor("it", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
HB = Order(system="http://loinc.org", code="718-7")


def local_bundle(code: str = "XHB", accession: str = "L-1") -> bytes:
    """A report whose observation carries only H001's own LIS code."""
    obs = f.observation("hb", "unused", 13.1)
    obs["code"] = {"coding": [{"system": LIS, "code": code, "display": "血红蛋白(院内)"}]}
    report: dict[str, Any] = json.loads(f.lab_bundle(accession=accession))["entry"][1]["resource"]
    report["code"] = {"coding": [{"system": LIS, "code": "XCBC", "display": "血常规"}]}
    report["result"] = [{"reference": "urn:uuid:hb"}]
    return f.bundle(
        [("urn:uuid:patient", f.patient()), ("urn:uuid:dr", report), ("urn:uuid:hb", obs)]
    )


async def index(c: Container, value: bytes) -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, "H001")])
    assert p.outcome.value == "indexed", p.detail


async def decision(c: Container) -> str:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
        Actor("dr-li", Role.DOCTOR, "H002"),
    )
    return answer.items[0].decision.decision.value


async def test_unmapped_codes_are_listed_then_mapped_without_restart(container: Container) -> None:
    c = container
    await certify(c)
    await index(c, local_bundle())
    await index(c, local_bundle(accession="L-2"))
    assert await decision(c) == "NO_PRIOR_RESULT"  # nothing is known to be haemoglobin

    async with c.sessions() as s:
        listed = {(u.code, u.occurrences) for u in await mappings.worklist(s, "H001")}
    assert listed == {("XHB", 2), ("XCBC", 2)}

    covered = await add_mapping(
        c.mapping_uow(),
        c.reference_rules().catalog,
        hospital="H001",
        system=LIS,
        code="XHB",
        catalog_code="LAB-HGB",
        by=Actor("it-zhou", Role.ADMIN, "H001"),
    )
    assert covered == 2
    assert await decision(c) == "RECOGNIZABLE"  # the same provider, no reload by hand
    async with c.sessions() as s:
        remaining = {u.code for u in await mappings.worklist(s, "H001")}
        everything = {u.code: u.mapped_to for u in await mappings.worklist(s, include_mapped=True)}
    assert remaining == {"XCBC"}
    assert everything == {"XHB": "LAB-HGB", "XCBC": None}
    # A later result with the mapped code does not go back on the worklist.
    await index(c, local_bundle(accession="L-3"))
    async with c.sessions() as s:
        assert {u.code for u in await mappings.worklist(s, "H001")} == {"XCBC"}


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"catalog_code": "LAB-NOPE"}, 422),
        ({"system": "http://loinc.org"}, 422),
        ({"hospital": "H404"}, 404),
    ],
)
async def test_bad_mappings_are_refused(
    container: Container, changes: dict[str, str], status: int
) -> None:
    args = {"hospital": "H001", "system": LIS, "code": "XHB", "catalog_code": "LAB-HGB"} | changes
    with pytest.raises(Refused) as refused:
        await add_mapping(
            container.mapping_uow(), container.reference_rules().catalog, by=PLATFORM_IT, **args
        )
    assert status_of(refused.value) == status


async def test_a_hospital_admin_maps_only_its_own_codes(container: Container) -> None:
    args = {"system": LIS, "code": "XHB", "catalog_code": "LAB-HGB"}
    other = Actor("it-li", Role.ADMIN, "H002")
    with pytest.raises(Forbidden, match="H001 is another hospital's"):
        await add_mapping(
            container.mapping_uow(),
            container.reference_rules().catalog,
            hospital="H001",
            by=other,
            **args,
        )
    doctor = Actor("dr-li", Role.DOCTOR, "H001")
    with pytest.raises(Forbidden, match="needs the role admin, platform-admin"):
        await add_mapping(
            container.mapping_uow(),
            container.reference_rules().catalog,
            hospital="H001",
            by=doctor,
            **args,
        )
