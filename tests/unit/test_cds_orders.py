"""Draft orders -> ordered items, and the patient's identifiers (CDS Hooks context)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from broker.cdshooks.models import FhirAuthorization
from broker.cdshooks.orders import (
    CONTRAST_EXTENSION,
    DICOM_MODALITY_SYSTEM,
    InvalidDraftOrders,
    order_key,
    parse_draft_orders,
    resolve,
    selected,
)
from broker.cdshooks.patients import (
    PatientSource,
    PatientUnavailable,
    identifiers,
    patient_resource,
)
from broker.domain.catalog import Catalog
from broker.domain.identifiers import RESIDENT_ID_SYSTEM
from broker.domain.recognition import Order
from broker.reference.loader import default_schemas_dir, load_catalog
from tests import factories as f

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_schemas_dir())


def service_request(rid: str, *codings: tuple[str, str], **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
        "subject": {"reference": "Patient/1288992"},
    }
    res.update(extra)
    return res


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}


# The spec's order-select example (R4) carries a NutritionOrder and a MedicationRequest.
NUTRITION = {"resourceType": "NutritionOrder", "id": "pureeddiet-simple", "status": "draft"}
MEDICATION = {
    "resourceType": "MedicationRequest",
    "id": "smart-MedicationRequest-103",
    "status": "draft",
    "intent": "order",
}


def test_only_draft_service_requests_about_this_patient_are_read() -> None:
    orders = parse_draft_orders(
        bundle(
            NUTRITION,
            MEDICATION,
            service_request("hgb-1", (LOINC, "718-7")),
            service_request("active-1", (LOINC, "718-7"), status="active"),
            service_request("other-pt", (LOINC, "718-7"), subject={"reference": "Patient/9"}),
            service_request("bad id!", (LOINC, "718-7")),
            service_request("hgb-1", (LOINC, "777-3")),  # a repeated id counts once
            {**service_request("no-status", (LOINC, "777-3")), "status": None},
        ),
        "1288992",
    )
    assert [o.ref for o in orders] == ["ServiceRequest/hgb-1", "ServiceRequest/no-status"]
    assert orders[0].codings == ((LOINC, "718-7"),)


@pytest.mark.parametrize("value", [None, [], {"resourceType": "Patient"}, {"entry": []}])
def test_draft_orders_must_be_a_bundle(value: object) -> None:
    with pytest.raises(InvalidDraftOrders):
        parse_draft_orders(value)


def test_selections_pick_the_orders_advised_on() -> None:
    orders = parse_draft_orders(
        bundle(
            service_request("a", (LOINC, "718-7")),
            service_request("b", (LOINC, "777-3")),
            MEDICATION,
        )
    )
    chosen = selected(orders, ["ServiceRequest/b", "MedicationRequest/smart-MedicationRequest-103"])
    assert [o.ref for o in chosen] == ["ServiceRequest/b"]
    assert selected(orders, []) == []
    assert selected(orders, [42, None]) == []


def test_loinc_orders_resolve_to_catalog_items(catalog: Catalog) -> None:
    (order,) = parse_draft_orders(bundle(service_request("a", (LOINC, "718-7"))))
    found = resolve(order, catalog, "H002")
    assert found is not None
    assert found.item.code == "LAB-HGB"
    assert found.order == Order(system=LOINC, code="718-7")


def test_the_first_known_coding_wins_over_unknown_ones(catalog: Catalog) -> None:
    (order,) = parse_draft_orders(
        bundle(service_request("a", ("urn:ehr:his:item", "X-17"), (LOINC, "777-3")))
    )
    found = resolve(order, catalog, "H002")
    assert found is not None and found.item.code == "LAB-PLT"


def test_local_codes_resolve_for_the_hospital_that_maps_them(catalog: Catalog) -> None:
    (order,) = parse_draft_orders(
        bundle(service_request("a", ("urn:mrb:hospital:H002:lab-code", "HGB")))
    )
    found = resolve(order, catalog, "H002")
    assert found is not None and found.item.code == "LAB-HGB"
    assert resolve(order, catalog, "H001") is None  # H001 does not use H002's codes
    (charge,) = parse_draft_orders(
        bundle(service_request("c", ("urn:mrb:hospital:H002:charge", "250101015")))
    )
    cbc = resolve(charge, catalog, "H002")
    assert cbc is not None and cbc.item.code == "LAB-CBC"


def test_unknown_orders_do_not_resolve(catalog: Catalog) -> None:
    (order,) = parse_draft_orders(bundle(service_request("a", ("urn:ehr:his:item", "X-17"))))
    assert resolve(order, catalog, "H002") is None
    (empty,) = parse_draft_orders(bundle(service_request("b")))
    assert resolve(empty, catalog, "H002") is None


def test_imaging_by_modality_and_body_site(catalog: Catalog) -> None:
    plain, enhanced = parse_draft_orders(
        bundle(
            service_request(
                "ct-1",
                (DICOM_MODALITY_SYSTEM, "CT"),
                bodySite=[{"coding": [{"system": SNOMED, "code": "51185008"}]}],
            ),
            service_request(
                "ct-2",
                (DICOM_MODALITY_SYSTEM, "ct"),
                bodySite=[{"coding": [{"system": SNOMED, "code": "51185008"}]}],
                extension=[{"url": CONTRAST_EXTENSION, "valueBoolean": True}],
            ),
        )
    )
    assert plain.codings == () and plain.modality == "CT" and plain.body_site == "51185008"
    a, b = resolve(plain, catalog, "H002"), resolve(enhanced, catalog, "H002")
    assert a is not None and a.item.code == "IMG-CT-CHEST-PLAIN"
    assert a.order == Order(modality="CT", body_site="51185008")
    assert b is not None and b.item.code == "IMG-CT-CHEST-ENH"
    assert b.order.contrast is True


def test_imaging_by_loinc_keeps_the_side(catalog: Catalog) -> None:
    (order,) = parse_draft_orders(
        bundle(
            service_request(
                "mr-1",
                (LOINC, "30691-0"),
                bodySite=[
                    {"coding": [{"system": SNOMED, "code": "72696002"}]},
                    {"coding": [{"system": SNOMED, "code": "7771000", "display": "Left"}]},
                ],
            )
        )
    )
    found = resolve(order, catalog, "H002")
    assert found is not None and found.item.code == "IMG-MR-KNEE-PLAIN"
    assert found.order == Order(system=LOINC, code="30691-0", laterality="7771000")


def test_r5_code_as_codeable_reference(catalog: Catalog) -> None:
    sr = service_request("a")
    sr["code"] = {"concept": {"coding": [{"system": LOINC, "code": "718-7"}]}}
    (order,) = parse_draft_orders(bundle(sr))
    found = resolve(order, catalog, "H002")
    assert found is not None and found.item.code == "LAB-HGB"


def test_stat_orders_are_urgent() -> None:
    a, b = parse_draft_orders(
        bundle(
            service_request("a", (LOINC, "718-7"), priority="stat"),
            service_request("b", (LOINC, "718-7"), priority="routine"),
        )
    )
    assert a.urgent and not b.urgent


def test_order_key_changes_with_what_is_ordered() -> None:
    hgb = order_key(Order(system=LOINC, code="718-7"))
    assert hgb == order_key(Order(system=LOINC, code="718-7"))
    assert hgb != order_key(Order(system=LOINC, code="777-3"))
    assert order_key(Order(modality="CT", body_site="1", contrast=True)) != order_key(
        Order(modality="CT", body_site="1", contrast=False)
    )
    assert len(hgb) == 64


# -- the patient -------------------------------------------------------------------------


def test_identifiers_put_a_valid_resident_id_first() -> None:
    patient = f.patient(pid="1288992")
    patient["identifier"] = [
        {"system": "urn:oid:2.16.156.10011.0.1.mrn", "value": "MRN-1"},
        {"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003071235"},  # bad digit
        {"system": "sfzh", "value": f.PATIENT_A.lower()},
        {"system": "urn:oid:2.16.156.10011.0.1.mrn", "value": "MRN-1"},
        {"value": "no-system"},
    ]
    assert identifiers(patient, "1288992") == [
        (RESIDENT_ID_SYSTEM, f.PATIENT_A),
        ("urn:oid:2.16.156.10011.0.1.mrn", "MRN-1"),
    ]


def test_another_patient_or_no_patient_gives_no_identifiers() -> None:
    assert identifiers(f.patient(pid="someone-else"), "1288992") == []
    assert identifiers({"resourceType": "Practitioner", "id": "1288992"}, "1288992") == []
    assert identifiers(None, "1288992") == []


async def test_prefetch_is_used_and_null_means_no_patient() -> None:
    pat = f.patient(pid="1")
    given = await patient_resource(PatientSource({"patient": pat}, None, None), "1")
    assert given == pat
    assert await patient_resource(PatientSource({"patient": None}, None, None), "1") is None
    with pytest.raises(PatientUnavailable):
        await patient_resource(PatientSource({}, None, None), "1")


async def test_the_fhir_server_is_read_with_the_ehrs_token() -> None:
    seen: list[httpx.Request] = []

    def ehr(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/Patient/missing"):
            return httpx.Response(404)
        if request.url.path.endswith("/Patient/broken"):
            return httpx.Response(500)
        return httpx.Response(200, content=json.dumps(f.patient(pid="p7")).encode())

    auth = FhirAuthorization(access_token=SecretStr("secret-token"), scope="patient/Patient.read")
    transport = httpx.MockTransport(ehr)
    # A server the CDS client did not register is never read, and its token goes nowhere.
    stranger = PatientSource(None, "https://ehr.example/fhir/", auth)
    with pytest.raises(PatientUnavailable):
        await patient_resource(stranger, "p7", transport=transport)
    assert seen == []
    source = PatientSource(None, "https://ehr.example/fhir/", auth, ("https://ehr.example/fhir",))
    patient = await patient_resource(source, "p7", transport=transport)
    assert patient is not None and patient["id"] == "p7"
    assert str(seen[0].url) == "https://ehr.example/fhir/Patient/p7"
    assert seen[0].headers["authorization"] == "Bearer secret-token"
    assert await patient_resource(source, "missing", transport=transport) is None
    with pytest.raises(PatientUnavailable, match="500"):
        await patient_resource(source, "broken", transport=transport)
    with pytest.raises(PatientUnavailable):
        await patient_resource(source, "../../admin", transport=transport)
    assert "secret-token" not in repr(auth)
