"""CDS Hooks 2.0 over HTTP with real signed JWTs, on SQLite and PostgreSQL.

Requests follow the specification's own order-select / order-sign examples (R4: the
NutritionOrder and MedicationRequest of the example are kept, our ServiceRequests are
added), with the spec's context (userId PractitionerRole/123, patientId 1288992,
encounterId 89284) and its feedback examples.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Connection, Table, func, inspect, select

from broker.api.app import create_app
from broker.api.routes.cds_hooks import cds_clock, cds_fhir_transport, router
from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.cdshooks.cards import DECLINE_REASON_SYSTEM, SUGGESTION_LABEL
from broker.domain.registry import Certification, CertifyingBody
from broker.settings import Settings
from broker.storage import cds_tables, hospitals
from broker.storage.cds_store import SqlCdsClients
from broker.storage.database import create_engine
from broker.storage.tables import (
    audit_event,
    ledger_entry,
    metadata,
    recognition_check,
    recognition_outcome,
    result,
)
from tests import factories as f
from tests.conftest import Db

BASE = "http://testserver"
ISS = "https://his.h002.example.cn/"
OTHER_ISS = "https://ris.h002.example.cn/"
SELECT = "mrb-recognition-order-select"
SIGN = "mrb-recognition-order-sign"
VIEW = "mrb-recognition-patient-view"
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
PATIENT_ID = "1288992"  # the spec examples' patient
LOINC = "http://loinc.org"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

# From the spec's order-select / order-sign R4 example (trimmed): not tests, never advised on.
NUTRITION_ORDER = {
    "resourceType": "NutritionOrder",
    "id": "pureeddiet-simple",
    "identifier": [{"system": "http://goodhealthhospital.org/nutrition-requests", "value": "123"}],
    "status": "draft",
    "patient": {"reference": "Patient/1288992"},
    "dateTime": "2014-09-17",
    "orderer": {"reference": "Practitioner/example", "display": "Dr Adam Careful"},
    "oralDiet": {
        "type": [
            {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "226211001", "display": "Pureed"}
                ],
                "text": "Pureed diet",
            }
        ]
    },
}
MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "smart-MedicationRequest-103",
    "status": "draft",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "617993",
                "display": "Amoxicillin 120 MG/ML / clavulanate potassium 8.58 MG/ML",
            }
        ]
    },
    "subject": {"reference": "Patient/1288992"},
    "dosageInstruction": [{"text": "5 mL bid x 10 days"}],
}


def lab_order(rid: str, code: str = "718-7", system: str = LOINC) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}],
        "code": {"coding": [{"system": system, "code": code}], "text": f"{system}|{code}"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "authoredOn": "2026-05-20T09:00:00+08:00",
        "requester": {"reference": "PractitionerRole/123"},
    }


def ct_chest_order(rid: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": "draft",
        "intent": "order",
        "code": {
            "coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
            "text": "胸部CT平扫",
        },
        "bodySite": [{"coding": [{"system": "http://snomed.info/sct", "code": "51185008"}]}],
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }


def hook_request(
    hook: str,
    *orders: dict[str, Any],
    selections: list[str] | None = None,
    patient: dict[str, Any] | str | None = "default",
    **top: Any,
) -> dict[str, Any]:
    """The spec's example request for `hook`, with `orders` added to draftOrders."""
    context: dict[str, Any] = {
        "userId": "PractitionerRole/123",
        "patientId": PATIENT_ID,
        "encounterId": "89284",
    }
    if hook != "patient-view":
        context["draftOrders"] = {
            "resourceType": "Bundle",
            "entry": [{"resource": r} for r in (NUTRITION_ORDER, MEDICATION_REQUEST, *orders)],
        }
    if hook == "order-select":
        context["selections"] = (
            selections
            if selections is not None
            else [
                "NutritionOrder/pureeddiet-simple",
                *(f"ServiceRequest/{o['id']}" for o in orders),
            ]
        )
    body: dict[str, Any] = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
    if patient == "default":
        body["prefetch"] = {"patient": f.patient(pid=PATIENT_ID)}
    elif patient != "absent":
        body["prefetch"] = {"patient": patient}
    body.update(top)
    return body


def sign(
    service: str,
    *,
    iss: str = ISS,
    key: Any = EC_KEY,
    alg: str = "ES384",
    kid: str = "his-1",
    aud: str | None = None,
    feedback: bool = False,
) -> str:
    now = int(time.time())
    url = f"{BASE}/cds-services/{service}" + ("/feedback" if feedback else "")
    return jwt.encode(
        {
            "iss": iss,
            "aud": aud or url,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "tenant": "H002",
        },
        key,
        algorithm=alg,
        headers={"kid": kid, "typ": "JWT"},
    )


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    algo = jwt.algorithms.ECAlgorithm if kid == "his-1" else jwt.algorithms.RSAAlgorithm
    data: dict[str, Any] = json.loads(algo.to_jwk(key.public_key()))
    return data | {"kid": kid, "use": "sig"}


@dataclass
class Ehr:
    container: Container
    http: httpx.AsyncClient
    fhir_calls: list[httpx.Request] = field(default_factory=list)

    async def call(self, service: str, body: dict[str, Any], **sign_kw: Any) -> httpx.Response:
        token = sign(service, **sign_kw)
        return await self.http.post(
            f"/cds-services/{service}", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    async def cards(self, service: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.call(service, body)
        assert response.status_code == 200, response.text
        cards: list[dict[str, Any]] = response.json()["cards"]
        return cards

    async def feedback(self, service: str, *entries: dict[str, Any], **kw: Any) -> httpx.Response:
        token = sign(service, feedback=True, **kw)
        return await self.http.post(
            f"/cds-services/{service}/feedback",
            json={"feedback": list(entries)},
            headers={"Authorization": f"Bearer {token}"},
        )

    async def count(self, table: Any) -> int:
        async with self.container.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(table)) or 0)

    async def rows(self, table: Any) -> list[dict[str, Any]]:
        async with self.container.sessions() as s:
            return [dict(r._mapping) for r in await s.execute(select(table))]


async def certify(c: Container, scope: str, hospital: str = "H001") -> None:
    async with c.sessions() as s, s.begin():
        await hospitals.certify(
            s,
            Certification(
                hospital, scope, CertifyingBody.PROVINCIAL_EQA, date(2026, 1, 1), date(2026, 12, 31)
            ),
            reference=None,
        )


async def index(c: Container, value: bytes, hospital: str = "H001") -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


EHR_FHIR = "https://his.h002.example.cn/fhir"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """mrb as the EHR reaches it: the audience its JWTs name and where cards link."""
    return settings.model_copy(update={"public_base_url": f"{BASE}/"})


@pytest.fixture
async def ehr(container: Container) -> AsyncIterator[Ehr]:
    """H001 holds patient A's blood count (18 May) and chest CT (10 May); H002's HIS asks."""
    await certify(container, "HEMATOLOGY")
    await certify(container, "CT")
    await index(container, f.lab_bundle())
    await index(container, f.imaging_bundle())
    async with container.sessions() as s, s.begin():
        await cds_clients.register_client(
            SqlCdsClients(s),
            ISS,
            "H002",
            jwks={"keys": [public_jwk(EC_KEY, "his-1")]},
            fhir_servers=[EHR_FHIR],
        )
        await cds_clients.register_client(
            SqlCdsClients(s), OTHER_ISS, "H002", jwks={"keys": [public_jwk(RSA_KEY, "ris-1")]}
        )
    app = create_app(container)
    app.include_router(router)
    calls: list[httpx.Request] = []

    def ehr_fhir(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.headers.get("authorization") != "Bearer ehr-access-token":
            return httpx.Response(401)
        if request.url.path == f"/fhir/Patient/{PATIENT_ID}":
            return httpx.Response(200, json=f.patient(pid=PATIENT_ID))
        return httpx.Response(503)

    app.dependency_overrides[cds_clock] = lambda: MAY_20
    app.dependency_overrides[cds_fhir_transport] = lambda: httpx.MockTransport(ehr_fhir)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        yield Ehr(container, http, calls)


async def result_id(e: Ehr, resource_type: str) -> str:
    async with e.container.sessions() as s:
        rid = await s.scalar(select(result.c.id).where(result.c.resource_type == resource_type))
    assert rid is not None
    return str(rid)


# -- discovery and the cards ------------------------------------------------------------


async def test_discovery_lists_the_three_services(ehr: Ehr) -> None:
    response = await ehr.http.get("/cds-services")
    assert response.status_code == 200
    services = {s["id"]: s for s in response.json()["services"]}
    assert {s["hook"] for s in services.values()} == {"order-select", "order-sign", "patient-view"}
    for s in services.values():
        assert s["title"] and s["description"]
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert services[SELECT]["hook"] == "order-select"


async def test_order_select_recommends_recognition_and_deleting_the_duplicate(ehr: Ehr) -> None:
    body = hook_request(
        "order-select",
        lab_order("hgb-1"),
        lab_order("plt-1", "777-3"),
        selections=["ServiceRequest/hgb-1", "MedicationRequest/smart-MedicationRequest-103"],
    )
    (card,) = await ehr.cards(SELECT, body)  # plt-1 is not selected: not advised on
    uuid.UUID(card["uuid"])
    assert len(card["summary"]) < 140 and "血红蛋白" in card["summary"]
    assert card["indicator"] == "info"
    assert card["source"]["label"] == "mrb 检查检验结果互认"
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    assert suggestion["label"] == SUGGESTION_LABEL
    uuid.UUID(suggestion["uuid"])
    assert suggestion["actions"] == [
        {
            "type": "delete",
            "description": suggestion["actions"][0]["description"],
            "resourceId": "ServiceRequest/hgb-1",
        }
    ]
    assert {r["code"] for r in card["overrideReasons"]} >= {"KEY_DECISION", "OTHER"}
    assert all(r["system"] == DECLINE_REASON_SYSTEM for r in card["overrideReasons"])
    report = await result_id(ehr, "DiagnosticReport")
    assert [link["url"] for link in card["links"]] == [
        f"{BASE}/doctor",
        f"{BASE}/fhir/DiagnosticReport/{report}",
    ]
    assert "RECOGNIZABLE" in card["detail"] and "¥5.40" in card["detail"]
    assert "2026-05-25" in card["detail"]  # valid until: 18 May + 7 days
    (check,) = await ehr.rows(recognition_check)
    assert check["ordering_hospital"] == "H002" and len(check["items"]) == 1
    audit = [r for r in await ehr.rows(audit_event) if r["action"] == "recognition-check"]
    assert [(a["actor"], a["hospital_id"]) for a in audit] == [("PractitionerRole/123", "H002")]


async def test_select_then_sign_is_one_check(ehr: Ehr) -> None:
    (at_select,) = await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    (at_sign,) = await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1")))
    assert await ehr.count(recognition_check) == 1
    assert at_sign["uuid"] != at_select["uuid"]
    assert at_sign["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/hgb-1"
    assert at_sign["summary"] == at_select["summary"]
    cards = await ehr.rows(cds_tables.cds_card)
    assert len({(c["check_id"], c["item_index"]) for c in cards}) == 1
    assert {c["service_id"] for c in cards} == {SELECT, SIGN}


async def test_sign_checks_only_the_orders_not_checked_at_select(ehr: Ehr) -> None:
    await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    cards = await ehr.cards(
        SIGN, hook_request("order-sign", lab_order("hgb-1"), lab_order("plt-1", "777-3"))
    )
    assert [c["suggestions"][0]["actions"][0]["resourceId"] for c in cards] == [
        "ServiceRequest/hgb-1",
        "ServiceRequest/plt-1",
    ]
    checks = await ehr.rows(recognition_check)
    assert sorted(len(c["items"]) for c in checks) == [1, 1]
    # A changed draft order (same id, another test) is decided again.
    await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1", "6690-2")))
    assert await ehr.count(recognition_check) == 3


async def test_local_codes_and_imaging_orders(ehr: Ehr) -> None:
    local = lab_order("his-77", "HGB", "urn:mrb:hospital:H002:lab-code")
    (lab, ct) = await ehr.cards(SIGN, hook_request("order-sign", local, ct_chest_order("ct-1")))
    assert lab["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/his-77"
    assert ct["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/ct-1"
    study = await result_id(ehr, "ImagingStudy")
    assert ct["links"][1] == {
        "label": "查看影像 Images",
        "url": f"{BASE}/fhir/ImagingStudy/{study}",
        "type": "absolute",
    }
    assert "胸部CT平扫" in ct["summary"]


async def test_no_card_when_there_is_nothing_to_recognise(ehr: Ehr) -> None:
    unknown = lab_order("x-1", "X-17", "urn:ehr:his:item")
    glucose = lab_order("glu-1", "2345-7")  # in the catalog, never measured for patient A
    assert await ehr.cards(SIGN, hook_request("order-sign", unknown)) == []
    assert await ehr.count(recognition_check) == 0  # not even looked up
    assert await ehr.cards(SIGN, hook_request("order-sign", glucose)) == []
    assert await ehr.cards(SIGN, hook_request("order-sign")) == []  # the spec's example alone


async def test_a_result_withdrawn_after_select_is_decided_again_at_sign(ehr: Ehr) -> None:
    (at_select,) = await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    assert at_select["indicator"] == "info"
    withdrawn = f.lab_bundle(
        status="entered-in-error", last_updated="2026-05-19T10:00:00+08:00", version="2"
    )
    await index(ehr.container, withdrawn)
    (at_sign,) = await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1")))
    assert at_sign["indicator"] == "warning" and "suggestions" not in at_sign
    assert "撤回" in at_sign["summary"] and "WITHDRAWN" in at_sign["detail"]
    assert await ehr.count(recognition_check) == 2  # the stored answer was stale
    response = await ehr.feedback(SIGN, overridden(at_sign, None))
    assert response.status_code == 200
    assert response.json()["feedback"][0]["recorded"] == "none"
    assert await ehr.count(recognition_outcome) == 0


# -- feedback ----------------------------------------------------------------------------


def accepted(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
        "outcomeTimestamp": "2026-05-20T01:05:00Z",
    }


def overridden(card: dict[str, Any], code: str | None, comment: str | None = None) -> dict:
    entry: dict[str, Any] = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-05-20T01:05:00Z",
    }
    reason: dict[str, Any] = {}
    if code:
        reason["reason"] = {"code": code, "system": DECLINE_REASON_SYSTEM}
    if comment:
        reason["userComment"] = comment
    if reason:
        entry["overrideReason"] = reason
    return entry


async def test_accepted_feedback_books_the_saving_once(ehr: Ehr) -> None:
    (card,) = await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    response = await ehr.feedback(SELECT, accepted(card))
    assert response.status_code == 200, response.text
    assert response.json()["feedback"] == [
        {
            "card": card["uuid"],
            "outcome": "accepted",
            "recorded": "accepted",
            "replayed": False,
            "fee_saved": "5.40",
        }
    ]
    again = await ehr.feedback(SELECT, accepted(card))
    assert again.status_code == 200 and again.json()["feedback"][0]["replayed"] is True
    (outcome,) = await ehr.rows(recognition_outcome)
    assert outcome["outcome"] == "accepted" and outcome["channel"] == "cds-hooks"
    assert outcome["recorded_by"] == "PractitionerRole/123"
    assert outcome["hospital_id"] == "H002" and outcome["catalog_code"] == "LAB-HGB"
    (saving,) = await ehr.rows(ledger_entry)
    assert saving["kind"] == "saving" and saving["amount_fen"] == 540
    assert saving["period"] == "2026-05" and saving["source_hospital"] == "H001"
    # Decided: order-sign says nothing more about it, and makes no second check.
    assert await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1"))) == []
    assert await ehr.count(recognition_check) == 1


async def test_overridden_feedback_declines_with_the_chosen_reason(ehr: Ehr) -> None:
    hgb, plt, unknown = await ehr.cards(
        SIGN,
        hook_request(
            "order-sign",
            lab_order("hgb-1"),
            lab_order("plt-1", "777-3"),
            lab_order("hgb-2", "20509-6"),
        ),
    )
    response = await ehr.feedback(
        SIGN,
        overridden(hgb, "KEY_DECISION"),
        overridden(plt, "OTHER", "外院血小板结果与临床不符"),
        overridden(unknown, None),
    )
    assert response.status_code == 200, response.text
    rows = sorted(await ehr.rows(recognition_outcome), key=lambda r: r["catalog_code"])
    got = [(r["outcome"], r["reason"], r["reason_text"]) for r in rows]
    assert sorted(got, key=str) == sorted(
        [
            ("declined", "KEY_DECISION", None),
            ("declined", "OTHER", "外院血小板结果与临床不符"),
            ("declined", "UNKNOWN", None),
        ],
        key=str,
    )
    assert await ehr.count(ledger_entry) == 0
    # The same feedback again changes nothing; a different outcome afterwards is refused.
    again = await ehr.feedback(SIGN, overridden(hgb, "KEY_DECISION"))
    assert again.status_code == 200 and again.json()["feedback"][0]["replayed"] is True
    conflict = await ehr.feedback(SIGN, accepted(hgb))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith("application/problem+json")
    assert await ehr.count(recognition_outcome) == 3 and await ehr.count(ledger_entry) == 0


async def test_feedback_for_an_unknown_card_is_404(ehr: Ehr) -> None:
    (card,) = await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    stranger = dict(accepted(card), card=str(uuid.uuid4()))
    response = await ehr.feedback(SELECT, stranger)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    # Not this service's card, nor this client's: as unknown.
    assert (await ehr.feedback(SIGN, accepted(card))).status_code == 404
    other = await ehr.feedback(
        SELECT, accepted(card), iss=OTHER_ISS, key=RSA_KEY, alg="RS384", kid="ris-1"
    )
    assert other.status_code == 404
    assert await ehr.count(recognition_outcome) == 0


async def test_accepted_feedback_must_name_the_cards_suggestion(ehr: Ehr) -> None:
    (card,) = await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    wrong = dict(accepted(card), acceptedSuggestions=[{"id": "something-else"}])
    assert (await ehr.feedback(SELECT, wrong)).status_code == 422
    missing = {k: v for k, v in accepted(card).items() if k != "outcomeTimestamp"}
    assert (await ehr.feedback(SELECT, missing)).status_code == 422
    assert await ehr.count(recognition_outcome) == 0


# -- the patient ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patient",
    [
        None,  # the EHR had no data for the template
        {"resourceType": "Patient", "id": PATIENT_ID},  # no identifiers
        f.patient(national_id=None, mrn="NOT-KNOWN", pid=PATIENT_ID),  # an MRN mrb never saw
        f.patient(national_id=f.PATIENT_B, mrn=None, pid=PATIENT_ID),  # someone mrb has not
        f.patient(pid="someone-else"),  # not the patient in context
    ],
    ids=["null", "no-identifier", "unknown-mrn", "unknown-person", "other-patient"],
)
async def test_a_patient_who_cannot_be_resolved_gets_no_cards(
    ehr: Ehr, patient: dict[str, Any] | None
) -> None:
    body = hook_request("order-select", lab_order("hgb-1"), patient=patient)
    assert await ehr.cards(SELECT, body) == []
    assert await ehr.count(recognition_check) == 0


async def test_the_ehrs_fhir_server_is_read_when_nothing_was_prefetched(ehr: Ehr) -> None:
    body = hook_request(
        "order-sign",
        lab_order("hgb-1"),
        patient="absent",
        fhirServer="https://his.h002.example.cn/fhir",
        fhirAuthorization={
            "access_token": "ehr-access-token",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read",
            "subject": "mrb-cds",
        },
    )
    (card,) = await ehr.cards(SIGN, body)
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/hgb-1"
    (call,) = ehr.fhir_calls
    assert str(call.url) == f"https://his.h002.example.cn/fhir/Patient/{PATIENT_ID}"


async def test_412_when_the_patient_can_be_neither_prefetched_nor_read(ehr: Ehr) -> None:
    no_server = hook_request("order-sign", lab_order("hgb-1"), patient="absent")
    response = await ehr.call(SIGN, no_server)
    assert response.status_code == 412
    assert response.headers["content-type"].startswith("application/problem+json")
    refused = dict(no_server, fhirServer="https://his.h002.example.cn/fhir")  # no token: 401
    assert (await ehr.call(SIGN, refused)).status_code == 412
    assert await ehr.count(recognition_check) == 0


async def test_a_fhir_server_not_registered_for_the_client_is_never_contacted(ehr: Ehr) -> None:
    authorization = {"access_token": "ehr-access-token", "token_type": "Bearer"}
    for elsewhere in (
        "https://attacker.example/fhir",  # another host
        "https://his.h002.example.cn.attacker.example/fhir",
        "https://his.h002.example.cn:8443/fhir",  # another port
        "http://his.h002.example.cn/fhir",  # not https
        "https://his.h002.example.cn/other",  # another path on the host
        "https://user@his.h002.example.cn/fhir",
    ):
        body = hook_request(
            "order-sign",
            lab_order("hgb-1"),
            patient="absent",
            fhirServer=elsewhere,
            fhirAuthorization=authorization,
        )
        response = await ehr.call(SIGN, body)
        assert response.status_code == 412, elsewhere
        assert response.json()["title"] == "Patient data unavailable"
        assert "ehr-access-token" not in response.text
    assert ehr.fhir_calls == []  # no request, so the EHR's token went nowhere
    refused = [r for r in await ehr.rows(audit_event) if r["action"] == "cds-fhir-server-refused"]
    assert len(refused) == 6 and refused[0]["detail"]["fhir_server_host"] == "attacker.example"
    assert refused[0]["detail"]["client"] == ISS and refused[0]["actor"] == "PractitionerRole/123"
    # The registered server, spelled with its default port and a trailing slash, is read.
    same = hook_request(
        "order-sign",
        lab_order("hgb-1"),
        patient="absent",
        fhirServer="HTTPS://his.h002.example.cn:443/fhir/",
        fhirAuthorization=authorization,
    )
    assert len(await ehr.cards(SIGN, same)) == 1
    (call,) = ehr.fhir_calls
    assert str(call.url) == f"{EHR_FHIR}/Patient/{PATIENT_ID}"


async def test_the_audience_is_the_configured_url_whatever_the_host_header(ehr: Ehr) -> None:
    body = hook_request("order-select", lab_order("hgb-1"))
    forged = {"Host": "attacker.example"}
    url = f"/cds-services/{SELECT}"
    aud_of_forged_host = sign(SELECT, aud=f"http://attacker.example{url}")
    response = await ehr.http.post(
        url, json=body, headers={**forged, "Authorization": f"Bearer {aud_of_forged_host}"}
    )
    assert response.status_code == 401
    configured = sign(SELECT)  # aud: http://testserver/cds-services/...
    response = await ehr.http.post(
        url, json=body, headers={**forged, "Authorization": f"Bearer {configured}"}
    )
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert all(link["url"].startswith(f"{BASE}/") for link in card["links"])  # not the Host


async def test_an_urgent_order_over_the_patient_limit_passes_as_break_glass(ehr: Ehr) -> None:
    ehr.container.settings.distinct_patients_per_hour = 1  # before the limiter is built
    assert len(await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1")))) == 1
    other = f.patient(national_id=f.PATIENT_B, mrn=None, pid=PATIENT_ID)
    refused = await ehr.call(SIGN, hook_request("order-sign", lab_order("hgb-2"), patient=other))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert "MRB_DISTINCT_PATIENTS_PER_HOUR" in refused.json()["detail"]
    urgent = lab_order("hgb-3") | {"priority": "stat"}
    passed = await ehr.call(SIGN, hook_request("order-sign", urgent, patient=other))
    assert passed.status_code == 200, passed.text
    glass = [r for r in await ehr.rows(audit_event) if r["purpose"] == "break-glass"]
    assert [(g["actor"], g["hospital_id"], g["detail"]["channel"]) for g in glass] == [
        ("PractitionerRole/123", "H002", "cds-hooks")
    ]
    again = await ehr.cards(SIGN, hook_request("order-sign", lab_order("hgb-1")))
    assert len(again) == 1  # the patient already looked up stays available


async def test_patient_view_says_other_hospitals_hold_results(ehr: Ehr) -> None:
    (card,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert card["indicator"] == "info" and "suggestions" not in card
    assert "有 2 份" in card["summary"] and len(card["summary"]) < 140
    assert (await ehr.cards(VIEW, hook_request("patient-view", patient=None))) == []
    views = [r for r in await ehr.rows(audit_event) if r["action"] == "cds-patient-view"]
    assert len(views) == 1 and views[0]["hospital_id"] == "H002"
    response = await ehr.feedback(VIEW, overridden(card, None))
    assert response.status_code == 200 and await ehr.count(recognition_outcome) == 0


async def test_patient_view_never_counts_another_hospitals_sensitive_results(ehr: Ehr) -> None:
    """An HIV result at H001 (patient rights: never shown, counted or hinted at to another
    hospital): H002's card reads exactly as before, and a patient whose only results
    elsewhere are sensitive gets no card at all."""
    (before,) = await ehr.cards(VIEW, hook_request("patient-view"))
    await index(ehr.container, hiv_bundle("HIV-1", f.patient()))
    (after,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert after["summary"] == before["summary"] and after["detail"] == before["detail"]
    only = f.patient(national_id=f.PATIENT_B, mrn="MRN-B", pid=PATIENT_ID)
    await index(ehr.container, hiv_bundle("HIV-2", only))
    assert await ehr.cards(VIEW, hook_request("patient-view", patient=only)) == []


def hiv_bundle(accession: str, pat: dict[str, Any]) -> bytes:
    """An HIV-1 RNA viral load (LOINC 25836-8, sensitive) reported by H001 on 19 May."""
    obs = f.observation(f"hiv-{accession}", "25836-8", 40, "copies/mL")
    obs["effectiveDateTime"] = "2026-05-19T08:30:00+08:00"
    report = {
        "resourceType": "DiagnosticReport",
        "id": f"dr-{accession}",
        "identifier": [{"system": "urn:lab:H001", "value": accession}],
        "status": "final",
        "code": {"coding": [{"system": f.LOINC, "code": "25836-8"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": obs["effectiveDateTime"],
        "result": [{"reference": f"urn:uuid:{obs['id']}"}],
    }
    return f.bundle(
        [("urn:uuid:patient", pat), ("urn:uuid:dr", report), (f"urn:uuid:{obs['id']}", obs)]
    )


async def test_patient_portal_users_get_no_advice(ehr: Ehr) -> None:
    body = hook_request("order-select", lab_order("hgb-1"))
    body["context"]["userId"] = "Patient/1288992"
    assert await ehr.cards(SELECT, body) == []


# -- authentication --------------------------------------------------------------------------


async def test_calls_without_a_valid_client_jwt_are_401(ehr: Ehr) -> None:
    body = hook_request("order-select", lab_order("hgb-1"))
    plain = await ehr.http.post(f"/cds-services/{SELECT}", json=body)
    assert plain.status_code == 401 and plain.headers["www-authenticate"] == "Bearer"
    assert plain.headers["content-type"].startswith("application/problem+json")
    wrong_aud = await ehr.call(SELECT, body, aud=f"{BASE}/cds-services/{SIGN}")
    assert wrong_aud.status_code == 401
    token = sign(SELECT)
    headers = {"Authorization": f"Bearer {token}"}
    first = await ehr.http.post(f"/cds-services/{SELECT}", json=body, headers=headers)
    replay = await ehr.http.post(f"/cds-services/{SELECT}", json=body, headers=headers)
    assert (first.status_code, replay.status_code) == (200, 401)
    assert "replay" not in replay.text  # the reason is logged, not told
    unknown = await ehr.call(SELECT, body, iss="https://unknown.example/")
    assert unknown.status_code == 401
    rsa_ok = await ehr.call(SELECT, body, iss=OTHER_ISS, key=RSA_KEY, alg="RS384", kid="ris-1")
    assert rsa_ok.status_code == 200
    async with ehr.container.sessions() as s, s.begin():
        assert await cds_clients.revoke_client(SqlCdsClients(s), OTHER_ISS)
    revoked = await ehr.call(SELECT, body, iss=OTHER_ISS, key=RSA_KEY, alg="RS384", kid="ris-1")
    assert revoked.status_code == 401


async def test_bad_requests_are_problems(ehr: Ehr) -> None:
    body = hook_request("order-select", lab_order("hgb-1"))
    wrong_hook = await ehr.call(SIGN, body)
    assert wrong_hook.status_code == 422
    unknown = await ehr.call("no-such-service", body)
    assert unknown.status_code == 404
    no_selections = hook_request("order-select", lab_order("hgb-1"))
    del no_selections["context"]["selections"]
    assert (await ehr.call(SELECT, no_selections)).status_code == 422
    broken = hook_request("order-sign")
    broken["context"]["draftOrders"] = ["not", "a", "bundle"]
    assert (await ehr.call(SIGN, broken)).status_code == 422
    missing = {k: v for k, v in body.items() if k != "hookInstance"}
    response = await ehr.call(SELECT, missing)
    assert response.status_code == 422 and f.PATIENT_A not in response.text


# -- storage ---------------------------------------------------------------------------------


async def test_no_identifier_is_stored_in_clear(ehr: Ehr) -> None:
    await ehr.cards(SELECT, hook_request("order-select", lab_order("hgb-1")))
    stored = json.dumps(
        [await ehr.rows(t) for t in (cds_tables.cds_card, cds_tables.cds_draft_order)],
        default=str,
        ensure_ascii=False,
    )
    assert f.PATIENT_A not in stored and "MRN-1" not in stored and "张三" not in stored
    # The card names the prior result (its summary and value): stored sealed, like the index.
    assert "13.2" not in stored and "Hemoglobin" not in stored and "血红蛋白" not in stored


async def test_client_registration_refuses_unsafe_keys(ehr: Ehr) -> None:
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY)) | {"kid": "p"}
    cases: list[tuple[Callable[..., Any], str]] = [
        (
            lambda c: cds_clients.register_client(c, "x", "H002", jwks={"keys": [private]}),
            "private",
        ),
        (lambda c: cds_clients.register_client(c, "x", "H404", jwks_url="https://x/j"), "H404"),
        (
            lambda c: cds_clients.register_client(c, "x", "H002", jwks_url="http://x.example/j"),
            "https",
        ),
        (lambda c: cds_clients.register_client(c, "x", "H002"), "either"),
        (
            lambda c: cds_clients.register_client(c, "x", "H002", jwks={"keys": [{"kty": "oct"}]}),
            "kid",
        ),
    ]
    for register, message in cases:
        async with ehr.container.sessions() as s, s.begin():
            with pytest.raises(cds_clients.ClientRegistrationError, match=message):
                await register(SqlCdsClients(s))
    async with ehr.container.sessions() as s, s.begin():
        await cds_clients.register_client(
            SqlCdsClients(s), ISS, "H001", jwks_url="https://his.example/jwks.json"
        )
        clients = {c.issuer: c for c in await cds_clients.list_clients(SqlCdsClients(s))}
    assert clients[ISS].hospital == "H001" and clients[ISS].jwks_url


CDS_TABLES = {"cds_client", "cds_jti", "cds_draft_order", "cds_card"}


def _touches(change: Any) -> set[str]:
    item = change[0] if isinstance(change, list) else change
    names: set[str] = set()
    for part in item[1:]:
        if isinstance(part, Table):
            names.add(part.name)
        elif isinstance(part, str):
            names.add(part)
        elif getattr(part, "table", None) is not None:
            names.add(part.table.name)
    return names


def _cds_diff(conn: Connection) -> list[object]:
    diff = compare_metadata(MigrationContext.configure(conn), metadata)
    return [d for d in diff if _touches(d) & CDS_TABLES]


async def test_the_migration_creates_exactly_the_cds_tables(db: Db) -> None:
    engine = create_engine(db.url, schema=db.schema)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_cds_diff) == []
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert names >= CDS_TABLES
    finally:
        await engine.dispose()
