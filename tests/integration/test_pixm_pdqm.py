"""IHE PIXm [ITI-83] and PDQm $match [ITI-119] over HTTP, on SQLite and PostgreSQL.

The clients are EHR integrations registered as CDS clients of H001 and H002, signing their
own JWTs as in tests/integration/test_cds_hooks.py, with `aud` the operation's URL.
Patient A: H001 sent the resident ID and MRN-1, H002 the resident ID and H2-77; patient
B: H001 sent the resident ID and MRN-2. The demographic tests (ITI-119 with demographics,
ITI-78) add, at H001 and without resident IDs: 王小明 (C), 王小亮 (C2, same birth date and
phone) and 李华 (D, same birth date).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B import get_fhir_model_class
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.domain.identifiers import normalise, resident_id_check_digit
from broker.fhir.balp import audit_event
from broker.fhir.pdq import MATCH_GRADE
from broker.ingest.service import Outcome
from broker.settings import Settings
from broker.storage.cds_store import SqlCdsClients
from broker.storage.check_uow import SqlPeople
from broker.storage.tables import audit_event as audit_table
from tests import factories as f
from tests.conftest import bearer

BASE = "http://testserver"
FHIR_JSON = "application/fhir+json"
MRN_SYSTEM = "urn:oid:2.16.156.10011.0.1.mrn"
H2_MRN_SYSTEM = "urn:h2:mrn"
A = f"{f.NATIONAL}|{f.PATIENT_A}"
NOBODY = "11010119900307123" + resident_id_check_digit("11010119900307123")
KEY = ec.generate_private_key(ec.SECP384R1())
ISSUERS = {"H001": "https://his.h001.example.cn/", "H002": "https://his.h002.example.cn/"}
PIX = "/fhir/Patient/$ihe-pix"
MATCH = "/fhir/Patient/$match"


def sign(path: str, hospital: str = "H001", aud: str | None = None) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": ISSUERS[hospital],
        "aud": aud or BASE + path,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    token = jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Mpi:
    container: Container
    http: httpx.AsyncClient
    a: str  # patient A's person id
    b: str

    async def pix(
        self, *params: tuple[str, str], hospital: str = "H001", status: int = 200, **kw: Any
    ) -> dict[str, Any]:
        headers = kw.pop("headers", None) or sign(PIX, hospital)
        r = await self.http.get(PIX, params=list(params), headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith(FHIR_JSON)
        body: dict[str, Any] = r.json()
        get_fhir_model_class(body["resourceType"]).model_validate(body)
        return body

    async def match(
        self, body: Any, *, hospital: str = "H001", status: int = 200, **kw: Any
    ) -> dict[str, Any]:
        headers = kw.pop("headers", None) or sign(MATCH, hospital)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": kw.pop("content_type", FHIR_JSON), **headers}
        r = await self.http.post(MATCH, content=content, headers=headers)
        assert r.status_code == status, r.text
        out: dict[str, Any] = r.json()
        get_fhir_model_class(out["resourceType"]).model_validate(out)
        return out

    async def audit(self, action: str) -> list[Any]:
        async with self.container.sessions() as s:
            rows = await s.execute(
                select(audit_table).where(audit_table.c.action == action).order_by(audit_table.c.id)
            )
            return list(rows.all())


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The audience the clients' JWTs name is mrb's published base URL."""
    return settings.model_copy(update={"public_base_url": f"{BASE}/"})


@pytest.fixture
async def mpi(container: Container) -> AsyncIterator[Mpi]:
    h2 = f.patient(mrn="H2-77", mrn_system=H2_MRN_SYSTEM, pid="h2p")
    processed = await container.ingest_service().process_batch(
        [
            f.inbound(f.lab_bundle(accession="ACC-1"), "H001"),
            f.inbound(f.lab_bundle(accession="ACC-2", pat=h2), "H002"),
            f.inbound(
                f.lab_bundle(accession="ACC-B", pat=f.patient(f.PATIENT_B, "MRN-2", pid="pb")),
                "H001",
            ),
        ]
    )
    assert [p.outcome for p in processed] == [Outcome.INDEXED] * 3, [p.detail for p in processed]
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1"}
    async with container.sessions() as s, s.begin():
        for hospital, issuer in ISSUERS.items():
            await cds_clients.register_client(
                SqlCdsClients(s), issuer, hospital, jwks={"keys": [jwk]}
            )
    people: dict[str, str | None] = {}
    async with container.sessions() as s:
        found = SqlPeople(s, container.pseudonyms, container.cipher)
        for name, value in (("a", f.PATIENT_A), ("b", f.PATIENT_B)):
            ident = normalise(f.NATIONAL, value, hospital="H001")
            assert ident is not None
            people[name] = await found.find(ident)
    transport = httpx.ASGITransport(app=create_app(container))
    a, b = people["a"], people["b"]
    assert a is not None and b is not None
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Mpi(container, http, a, b)


def targets(params: dict[str, Any]) -> tuple[set[tuple[str, str]], list[str]]:
    idents = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params["parameter"]
        if p["name"] == "targetIdentifier"
    }
    ids = [p["valueReference"]["reference"] for p in params["parameter"] if p["name"] == "targetId"]
    return idents, ids


def issue(outcome: dict[str, Any]) -> tuple[str, str]:
    (first,) = outcome["issue"]
    return first["code"], first["diagnostics"]


# -- PIXm [ITI-83] ---------------------------------------------------------------------


async def test_the_capability_statement_lists_both_operations(mpi: Mpi) -> None:
    r = await mpi.http.get("/fhir/metadata")
    (patient,) = [x for x in r.json()["rest"][0]["resource"] if x["type"] == "Patient"]
    operations = {o["name"]: o for o in patient["operation"]}
    assert set(operations) == {"ihe-pix", "match"}
    assert operations["ihe-pix"]["definition"].startswith("https://profiles.ihe.net/ITI/PIXm/")
    assert "demographics" in operations["match"]["documentation"]
    # ITI-78's search parameters (2:3.78.4.1.2.1), each one saying what mrb does with it.
    params = {p["name"]: p for p in patient["searchParam"]}
    assert {"family", "given", "birthdate", "address", "address-city", "active"} <= set(params)
    assert {"address-postalcode", "address-country", "mothersMaidenName"} <= set(params)
    assert "Not stored" in params["mothersMaidenName"]["documentation"]
    assert params["address"]["type"] == "string" and params["active"]["type"] == "token"


async def test_pix_returns_the_persons_other_identifiers_the_client_may_see(mpi: Mpi) -> None:
    by_national = await mpi.pix(("sourceIdentifier", A))
    assert by_national["resourceType"] == "Parameters"
    # The source identifier itself is not returned (ITI-83 2:3.83.4.2.2.1); H002's is not
    # H001's to see.
    assert targets(by_national) == ({(MRN_SYSTEM, "MRN-1")}, [f"Patient/{mpi.a}"])
    by_mrn = await mpi.pix(("sourceIdentifier", f"{MRN_SYSTEM}|MRN-1"), ("_format", "json"))
    assert targets(by_mrn) == ({(f.NATIONAL, f.PATIENT_A)}, [f"Patient/{mpi.a}"])
    # H002's client: the mirror.
    theirs = await mpi.pix(("sourceIdentifier", A), hospital="H002")
    assert targets(theirs) == ({(H2_MRN_SYSTEM, "H2-77")}, [f"Patient/{mpi.a}"])
    assert "MRN-1" not in json.dumps(theirs)
    # H001's MRN means nothing at H002: not found there.
    await mpi.pix(("sourceIdentifier", f"{MRN_SYSTEM}|MRN-1"), hospital="H002", status=404)


async def test_target_system_selects_domains_and_an_unknown_one_is_403(mpi: Mpi) -> None:
    national = await mpi.pix(
        ("sourceIdentifier", f"{MRN_SYSTEM}|MRN-1"), ("targetSystem", f.NATIONAL)
    )
    assert targets(national)[0] == {(f.NATIONAL, f.PATIENT_A)}
    alias = await mpi.pix(("sourceIdentifier", f"{MRN_SYSTEM}|MRN-1"), ("targetSystem", "sfzh"))
    assert targets(alias)[0] == {(f.NATIONAL, f.PATIENT_A)}  # an alias names the same domain
    mrn = await mpi.pix(("sourceIdentifier", A), ("targetSystem", MRN_SYSTEM))
    assert targets(mrn)[0] == {(MRN_SYSTEM, "MRN-1")}
    only_source = await mpi.pix(("sourceIdentifier", A), ("targetSystem", f.NATIONAL))
    assert targets(only_source) == (set(), [f"Patient/{mpi.a}"])
    for unknown in ("urn:unknown:system", H2_MRN_SYSTEM):  # H002's MRNs are not H001's
        refused = await mpi.pix(
            ("sourceIdentifier", A),
            ("targetSystem", f.NATIONAL),
            ("targetSystem", unknown),
            status=403,
        )
        assert issue(refused) == ("code-invalid", "targetSystem not found")


async def test_an_identifier_nobody_has_is_404(mpi: Mpi) -> None:
    for source in (f"{f.NATIONAL}|{NOBODY}", f"{MRN_SYSTEM}|MRN-404", "urn:x:other|1"):
        outcome = await mpi.pix(("sourceIdentifier", source), status=404)
        assert issue(outcome) == ("not-found", "sourceIdentifier Patient Identifier not found")
        assert outcome["issue"][0]["severity"] == "error"


async def test_a_bad_source_identifier_is_400(mpi: Mpi) -> None:
    no_domain = "sourceIdentifier Assigning Authority not found"
    for source in ("MRN-1", f"|{f.PATIENT_A}"):
        outcome = await mpi.pix(("sourceIdentifier", source), status=400)
        assert issue(outcome) == ("code-invalid", no_domain)
    for params in (
        [],
        [("sourceIdentifier", A), ("sourceIdentifier", f"{MRN_SYSTEM}|MRN-1")],
        [("sourceIdentifier", f"{f.NATIONAL}|")],
        [("sourceIdentifier", f"{f.NATIONAL}|{f.PATIENT_A[:-1]}0")],  # check digit
        [("sourceIdentifier", A), ("targetSystem", "")],
    ):
        outcome = await mpi.pix(*params, status=400)
        assert outcome["issue"][0]["code"] == "invalid"
    r = await mpi.http.get(PIX, params={"sourceIdentifier": A, "_format": "xml"}, headers=sign(PIX))
    assert r.status_code == 406


async def test_only_registered_machine_clients_may_ask(mpi: Mpi) -> None:
    doctor = await bearer(mpi.container, "doctor", "H001", "dr.wang")
    refused = await mpi.pix(("sourceIdentifier", A), headers=doctor, status=403)
    assert refused["issue"][0]["code"] == "forbidden"
    auditor = await bearer(mpi.container, "audit", "*", "auditor")
    await mpi.pix(("sourceIdentifier", A), headers=auditor, status=403)
    await mpi.match({"resourceType": "Patient"}, headers=doctor, status=403)
    await mpi.pix(("sourceIdentifier", A), headers={"Authorization": "Bearer x.y.z"}, status=401)
    r = await mpi.http.get(PIX, params={"sourceIdentifier": A})
    assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    # A JWT signed for another URL (a CDS service) is not accepted here.
    other = sign(PIX, aud=f"{BASE}/cds-services/mrb-recognition-order-select")
    await mpi.pix(("sourceIdentifier", A), headers=other, status=401)
    # Nothing was asked on behalf of anyone refused.
    assert await mpi.audit("fhir-pix-query") == []


async def test_every_pix_query_is_audited_found_or_not(mpi: Mpi) -> None:
    await mpi.pix(("sourceIdentifier", A), ("targetSystem", MRN_SYSTEM))
    await mpi.pix(("sourceIdentifier", f"{f.NATIONAL}|{NOBODY}"), status=404)
    await mpi.pix(("sourceIdentifier", A), ("targetSystem", "urn:unknown"), status=403)
    found, nobody, refused = await mpi.audit("fhir-pix-query")
    for row in (found, nobody, refused):
        assert (row.actor, row.role, row.hospital_id) == (ISSUERS["H001"], "adapter", "H001")
        assert row.purpose == "treatment" and row.detail["client"] == ISSUERS["H001"]
        assert row.patient_pseudonym and f.PATIENT_A not in json.dumps(row.detail)
    a = normalise(f.NATIONAL, f.PATIENT_A, hospital="H001")
    assert a is not None and found.patient_pseudonym == mpi.container.pseudonyms.of(a)
    assert (found.person_id, found.detail["outcome"], found.detail["returned"]) == (
        mpi.a,
        "found",
        1,
    )
    assert (nobody.person_id, nobody.detail["outcome"]) == (None, "not-found")
    assert (refused.person_id, refused.detail["outcome"]) == (mpi.a, "target-unknown")
    event = audit_event(found._mapping, f"{BASE}/fhir")
    get_fhir_model_class("AuditEvent").model_validate(event)
    subtypes = {(c["system"], c["code"]) for c in event["subtype"]}
    assert ("urn:ihe:event-type-code", "ITI-83") in subtypes
    assert ("http://hl7.org/fhir/restful-interaction", "operation") in subtypes
    assert event["entity"][-1]["what"]["reference"] == f"Patient/{mpi.a}"


# -- PDQm $match [ITI-119] -------------------------------------------------------------


def parameters(*identifiers: tuple[str, str], **extra: Any) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
    }
    patient.update(extra.pop("patient", {}))
    params: list[dict[str, Any]] = [{"name": "resource", "resource": patient}]
    if "only_certain" in extra:
        params.append({"name": "onlyCertainMatches", "valueBoolean": extra["only_certain"]})
    if "count" in extra:
        params.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": params}


def matches(bundle: dict[str, Any]) -> list[tuple[str, float, str]]:
    out = []
    for e in bundle.get("entry", []):
        if e["search"]["mode"] == "match":
            (grade,) = e["search"]["extension"]
            assert grade["url"] == MATCH_GRADE
            out.append((e["resource"]["id"], e["search"]["score"], grade["valueCode"]))
    return out


async def test_an_identifier_match_is_certain_and_shows_what_the_client_may_see(
    mpi: Mpi,
) -> None:
    bundle = await mpi.match(
        parameters((f.NATIONAL, f.PATIENT_A), patient={"maritalStatus": {"text": "M"}})
    )
    assert bundle["type"] == "searchset" and bundle["total"] == 1
    assert matches(bundle) == [(mpi.a, 1.0, "certain")]
    patient = bundle["entry"][0]["resource"]
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {
        (f.NATIONAL, f.PATIENT_A),
        (MRN_SYSTEM, "MRN-1"),
    }
    assert "H2-77" not in json.dumps(bundle)
    # The marital status is not compared, and the answer says so.
    (outcome,) = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["issue"][0]["severity"] == "warning"
    assert "maritalStatus" in outcome["issue"][0]["diagnostics"]
    # The Patient itself as the body; H002 sees its own MRN instead.
    bare = await mpi.match(parameters((f.NATIONAL, f.PATIENT_A))["parameter"][0]["resource"])
    assert matches(bare) == [(mpi.a, 1.0, "certain")]
    theirs = await mpi.match(parameters((H2_MRN_SYSTEM, "H2-77")), hospital="H002")
    assert matches(theirs) == [(mpi.a, 1.0, "certain")]
    assert "MRN-1" not in json.dumps(theirs)


async def test_no_match_and_contradicting_identifiers(mpi: Mpi) -> None:
    nobody = await mpi.match(parameters((f.NATIONAL, NOBODY), (MRN_SYSTEM, "MRN-404")))
    assert nobody["total"] == 0 and matches(nobody) == []
    # A's resident ID with B's MRN: two people, neither certain.
    both = parameters((f.NATIONAL, f.PATIENT_A), (MRN_SYSTEM, "MRN-2"))
    found = await mpi.match(both)
    assert sorted(matches(found)) == sorted([(mpi.a, 0.5, "possible"), (mpi.b, 0.5, "possible")])
    only_certain = parameters((f.NATIONAL, f.PATIENT_A), (MRN_SYSTEM, "MRN-2"), only_certain=True)
    assert matches(await mpi.match(only_certain)) == []
    one = parameters((f.NATIONAL, f.PATIENT_A), (MRN_SYSTEM, "MRN-2"), count=1)
    assert len(matches(await mpi.match(one))) == 1
    rows = await mpi.audit("fhir-pdq-match")
    assert [r.person_id for r in rows[:1]] == [None]  # nobody found: audited all the same
    assert {r.person_id for r in rows[1:3]} == {mpi.a, mpi.b}
    for r in rows:
        assert (r.actor, r.role, r.hospital_id) == (ISSUERS["H001"], "adapter", "H001")
        assert r.patient_pseudonym is not None


async def test_a_malformed_match_request_is_400(mpi: Mpi) -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": f.NATIONAL, "value": "1"}]}
    for body, says in (
        (b"{not json", "not JSON"),
        ({"resourceType": "Bundle"}, "Parameters"),
        ({"resourceType": "Parameters"}, "resource"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 2}]},
            "resource",
        ),
        (parameters((f.NATIONAL, f.PATIENT_A), count=0), "count"),
        (parameters((f.NATIONAL, f.PATIENT_A), only_certain="yes"), "onlyCertainMatches"),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": {"resourceType": "Observation"}}],
            },
            "Patient",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": patient},
                    {"name": "limit", "valueInteger": 1},
                ],
            },
            "limit",
        ),
        (parameters((f.NATIONAL, f.PATIENT_A[:-1] + "0")), "identifier[0]"),
        ({**patient, "identifier": {"system": f.NATIONAL}}, "identifier"),
    ):
        outcome = await mpi.match(body, status=400)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "invalid"
        assert says in outcome["issue"][0]["diagnostics"], outcome
    await mpi.match(parameters((f.NATIONAL, f.PATIENT_A)), content_type="text/plain", status=415)


# -- PDQm with demographics: $match [ITI-119] and Patient search [ITI-78] ---------------

SEARCH = "/fhir/Patient"
BORN = "1985-03-12"
PHONE = "13800138000"


def person(pid: str, mrn: str, name: str, gender: str, **extra: Any) -> dict[str, Any]:
    resource = f.patient(None, mrn, pid=pid) | {
        "name": [{"text": name}],
        "gender": gender,
        "birthDate": BORN,
    }
    return resource | extra


@dataclass
class People:
    mpi: Mpi
    c: str  # 王小明
    c2: str  # 王小亮
    d: str  # 李华


@pytest.fixture
async def people(mpi: Mpi) -> People:
    phone = {"telecom": [{"system": "phone", "value": PHONE}]}
    home = {
        "address": [
            {"state": "广东省", "city": "广州市", "district": "天河区", "line": ["体育西路1号"]}
        ]
    }
    sent = {
        "c": person("pc", "MRN-C", "王小明", "male", **phone, **home),
        "c2": person("pc2", "MRN-C2", "王小亮", "male", **phone),
        "d": person("pd", "MRN-D", "李华", "female"),
    }
    processed = await mpi.container.ingest_service().process_batch(
        [f.inbound(f.lab_bundle(accession=f"ACC-{k}", pat=p), "H001") for k, p in sent.items()]
    )
    assert [p.outcome for p in processed] == [Outcome.INDEXED] * 3, [p.detail for p in processed]
    ids: dict[str, str] = {}
    async with mpi.container.sessions() as s:
        found = SqlPeople(s, mpi.container.pseudonyms, mpi.container.cipher)
        for key, p in sent.items():
            ident = normalise(MRN_SYSTEM, p["identifier"][0]["value"], hospital="H001")
            assert ident is not None
            pid = await found.find(ident)
            assert pid is not None
            ids[key] = pid
    assert len(set(ids.values())) == 3  # nobody was linked automatically
    return People(mpi, ids["c"], ids["c2"], ids["d"])


def demographic(name: str = "王小明", gender: str = "male", **extra: Any) -> dict[str, Any]:
    return {"name": [{"text": name}], "gender": gender, "birthDate": BORN, **extra}


async def test_a_person_is_matched_by_name_birth_date_and_gender(people: People) -> None:
    mpi = people.mpi
    found = matches(await mpi.match(parameters(patient=demographic())))
    # Name, birth date and sex agree, but no contact detail: the engine caps the decision at
    # POSSIBLE_MATCH above the match threshold, which is `probable`. 李华 shares the birth
    # date block only: NO_MATCH, not returned; 王小亮 is a different given name.
    assert [(pid, grade) for pid, _, grade in found][:1] == [(people.c, "probable")]
    assert 0.70 <= found[0][1] < 0.90
    assert people.d not in {pid for pid, _, _ in found}
    # With the phone the engine decides MATCH: certain.
    phone = demographic(telecom=[{"system": "phone", "value": "+86 138-0013-8000"}])
    certain = matches(await mpi.match(parameters(patient=phone)))
    assert certain[0][0] == people.c and certain[0][2] == "certain"
    assert 0.90 <= certain[0][1] < 1.0
    assert people.d not in {pid for pid, _, _ in certain}
    # The Patient answered is H001's own record of them (the client's hospital).
    bundle = await mpi.match(parameters(patient=phone))
    patient = bundle["entry"][0]["resource"]
    assert patient["name"] == [{"text": "王小明"}] and patient["birthDate"] == BORN
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {(MRN_SYSTEM, "MRN-C")}


async def test_a_typo_in_the_name_is_only_possible(people: People) -> None:
    found = matches(await people.mpi.match(parameters(patient=demographic("王小民"))))
    graded = {pid: (score, grade) for pid, score, grade in found}
    assert graded[people.c][1] == "possible" and 0.50 <= graded[people.c][0] < 0.70
    assert people.d not in graded
    # A different person altogether (another name, sex and birth date): nobody.
    other = demographic("赵敏", "female") | {"birthDate": "1990-01-01"}
    assert matches(await people.mpi.match(parameters(patient=other))) == []


async def test_only_certain_matches_and_count(people: People) -> None:
    mpi = people.mpi
    only = await mpi.match(parameters(patient=demographic(), only_certain=True))
    assert matches(only) == [] and only["total"] == 0
    phone = demographic(telecom=[{"system": "phone", "value": PHONE}])
    assert [
        m[0] for m in matches(await mpi.match(parameters(patient=phone, only_certain=True)))
    ] == [people.c]
    everyone = matches(await mpi.match(parameters(patient=phone)))
    assert len(everyone) >= 2 and everyone[0][0] == people.c  # 王小亮 is a lesser match
    assert [s for _, s, _ in everyone] == sorted((s for _, s, _ in everyone), reverse=True)
    one = matches(await mpi.match(parameters(patient=phone, count=1)))
    assert [m[0] for m in one] == [people.c]
    big = matches(await mpi.match(parameters(patient=phone, count=500)))
    assert len(big) == len(everyone) <= 10


async def test_identifiers_and_demographics_are_combined(people: People) -> None:
    mpi = people.mpi
    # C's own MRN and C's demographics: certain by the identifier (score 1).
    own = await mpi.match(parameters((MRN_SYSTEM, "MRN-C"), patient=demographic()))
    assert matches(own)[0] == (people.c, 1.0, "certain")
    # A's resident ID with C's demographics: A by identifier (certain, first), C by
    # demographics, but the resident ID takes part in the hard rules: a national identifier
    # C's records do not have is no conflict, so C stays a probable match.
    both = matches(await mpi.match(parameters((f.NATIONAL, f.PATIENT_A), patient=demographic())))
    assert both[0] == (mpi.a, 1.0, "certain")
    assert (people.c, "probable") in {(pid, grade) for pid, _, grade in both}
    only = await mpi.match(
        parameters((f.NATIONAL, f.PATIENT_A), patient=demographic(), only_certain=True)
    )
    assert [m[0] for m in matches(only)] == [mpi.a]


async def test_match_audit_holds_no_demographics(people: People) -> None:
    mpi = people.mpi
    phone = demographic(telecom=[{"system": "phone", "value": PHONE}])
    await mpi.match(parameters(patient=phone))
    await _search(mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN))
    rows = await mpi.audit("fhir-pdq-match") + await mpi.audit("fhir-pdq-query")
    assert rows and people.c in {r.person_id for r in rows}
    for r in rows:
        text = json.dumps(r.detail, ensure_ascii=False) + str(r.patient_pseudonym)
        for clear in ("王", "小明", "xiaoming", BORN, "1985", PHONE, "male"):
            assert clear not in text, (clear, text)
    matched = [r for r in rows if r.action == "fhir-pdq-match" and r.person_id == people.c]
    assert matched[0].detail["by"] == "demographics"


# -- ITI-78 ------------------------------------------------------------------------------


async def _search(
    mpi: Mpi, *params: tuple[str, str], hospital: str = "H001", status: int = 200, **kw: Any
) -> dict[str, Any]:
    headers = {**(kw.pop("headers", None) or sign(SEARCH, hospital)), **kw.pop("extra", {})}
    r = await mpi.http.get(SEARCH, params=list(params), headers=headers)
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


async def test_pdqm_search_by_demographics(people: People) -> None:
    mpi = people.mpi
    by_chars = await _search(mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN))
    assert ids(by_chars) == [people.c] and by_chars["total"] == 1
    by_pinyin = await _search(
        mpi,
        ("family", "WANG"),
        ("given:exact", "XIAOMING"),
        ("gender", "male"),
        ("birthdate", BORN),
    )
    assert ids(by_pinyin) == [people.c]
    by_phone = await _search(mpi, ("telecom", f"phone|{PHONE}"), ("gender", "male"))
    assert sorted(ids(by_phone)) == sorted([people.c, people.c2])
    assert ids(await _search(mpi, ("birthdate", BORN), ("gender", "female"))) == [people.d]
    assert ids(await _search(mpi, ("family", "章"), ("given", "小明"), ("birthdate", BORN))) == []
    # An identifier names the person; the demographics given must hold for them.
    mrn = f"{MRN_SYSTEM}|MRN-C"
    assert ids(await _search(mpi, ("identifier", mrn), ("birthdate", BORN))) == [people.c]
    assert ids(await _search(mpi, ("identifier", mrn), ("family", "李"), ("birthdate", BORN))) == []
    assert ids(await _search(mpi, ("identifier", A))) == [mpi.a]
    # Bounded: _count, and the rest by next links (test_pdqm_search_pages_...).
    one = await _search(mpi, ("birthdate", BORN), ("_count", "1"))
    assert len(ids(one)) == 1 and one["total"] == 3
    assert not any(e["search"]["mode"] == "outcome" for e in one["entry"])


async def test_pdqm_search_returns_only_the_callers_own_demographics(people: People) -> None:
    mpi = people.mpi
    theirs = await _search(
        mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN), hospital="H002"
    )
    assert ids(theirs) == [people.c]
    patient = theirs["entry"][0]["resource"]
    # H002 never sent 王小明: gender and birth date only, no name, phone or H001's MRN.
    assert set(patient) <= {"resourceType", "id", "meta", "gender", "birthDate"}
    assert (patient["gender"], patient["birthDate"]) == ("male", BORN)
    mine = await _search(mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN))
    assert mine["entry"][0]["resource"]["name"] == [{"text": "王小明"}]


async def test_pdqm_search_refusals(people: People) -> None:
    mpi = people.mpi
    for params in (
        [("family", "王")],  # nothing to block on
        [("gender", "male")],
        [("birthdate", "1985")],
        [("birthdate", "ge1985-03-12")],
        [("gender", "x"), ("birthdate", BORN)],
        [("family", "王,李"), ("birthdate", BORN)],
    ):
        outcome = await _search(mpi, *params, status=400)
        assert outcome["resourceType"] == "OperationOutcome"
    # mrb stores no mother's maiden name: always 400, never a silent "no match".
    maiden = await _search(mpi, ("birthdate", BORN), ("mothersMaidenName", "x"), status=400)
    assert maiden["issue"][0]["code"] == "not-supported"
    assert "not stored by mrb" in maiden["issue"][0]["diagnostics"]
    # Nor a postal code or country: ignored with a warning, or 400 when strict.
    ignored = await _search(mpi, ("birthdate", BORN), ("address-postalcode", "510000"))
    assert len(ids(ignored)) == 3
    (note,) = [e["resource"] for e in ignored["entry"] if e["search"]["mode"] == "outcome"]
    assert "address-postalcode" in note["issue"][0]["diagnostics"]
    assert note["issue"][0]["severity"] == "warning"
    strict = {"Prefer": "handling=strict"}
    await _search(mpi, ("birthdate", BORN), ("address-country", "CN"), extra=strict, status=400)
    await _search(mpi, ("birthdate", BORN), ("x-unknown", "1"), extra=strict, status=400)
    await _search(mpi, ("address", "天河区"), status=400)  # an address alone does not block
    await _search(mpi, ("birthdate", BORN), ("active", "maybe"), status=400)
    # A doctor may not search by name: one named patient, by identifier, only.
    doctor = await bearer(mpi.container, "doctor", "H001", "dr.wang")
    refused = await _search(
        mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN), headers=doctor, status=403
    )
    assert refused["issue"][0]["code"] == "forbidden"
    named = await _search(mpi, ("identifier", A), headers=doctor)
    assert ids(named) == [mpi.a]
    # No token, or a JWT that is no registered client's: 401.
    r = await mpi.http.get(SEARCH, params={"birthdate": BORN})
    assert r.status_code == 401
    await _search(mpi, ("birthdate", BORN), headers={"Authorization": "Bearer x.y.z"}, status=401)
    assert await mpi.audit("fhir-pdq-query") != []


async def test_a_pdqm_search_audit_entry_is_an_iti_78_audit_event(people: People) -> None:
    mpi = people.mpi
    await _search(mpi, ("family", "王"), ("given", "小明"), ("birthdate", BORN))
    (row,) = await mpi.audit("fhir-pdq-query")
    assert (row.actor, row.role, row.person_id) == (ISSUERS["H001"], "adapter", people.c)
    assert row.detail["parameters"] == ["birthdate", "family", "given"]
    event = audit_event(row._mapping, f"{BASE}/fhir")
    get_fhir_model_class("AuditEvent").model_validate(event)
    subtypes = {(c["system"], c["code"]) for c in event["subtype"]}
    assert ("urn:ihe:event-type-code", "ITI-78") in subtypes
    assert ("http://hl7.org/fhir/restful-interaction", "search-type") in subtypes
    assert "王" not in json.dumps(event, ensure_ascii=False)


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


async def _follow(mpi: Mpi, url: str, hospital: str = "H001", status: int = 200) -> dict[str, Any]:
    r = await mpi.http.get(url, headers=sign(SEARCH, hospital))
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    return body


async def test_pdqm_search_pages_with_sealed_next_links(people: People) -> None:
    mpi = people.mpi
    page = await _search(mpi, ("family", "王"), ("birthdate", BORN), ("_count", "1"))
    # family alone blocks nothing, birthdate does: 王小明 and 王小亮.
    seen = ids(page)
    assert page["total"] == 2 and len(seen) == 1 and link(page, "previous") is None
    nxt = link(page, "next")
    assert nxt is not None
    # The cursor carries the search encrypted: no name or birth date in the URL.
    cursor = unquote(nxt.split("_cursor=")[1]).split(".")[0]
    clear = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    for value in ("1985", "family", "birthdate"):
        assert value not in clear and value not in unquote(nxt)
    second = await _follow(mpi, nxt)
    seen += ids(second)
    assert second["total"] == 2 and link(second, "next") is None
    assert link(second, "previous") is not None
    assert sorted(seen) == sorted([people.c, people.c2])
    assert not any(e["search"]["mode"] == "outcome" for e in second["entry"])
    # Bound to the client that searched; whole as given.
    refused = await _follow(mpi, nxt, hospital="H002", status=403)
    assert refused["issue"][0]["code"] == "forbidden"
    await _follow(mpi, nxt + "&birthdate=" + BORN, status=400)
    # Every page is audited, with its offset.
    rows = await mpi.audit("fhir-pdq-query")
    assert [r.detail["offset"] for r in rows] == [0, 1]
    assert all(r.detail["total"] == 2 for r in rows)


async def test_pdqm_search_by_address_and_active(people: People) -> None:
    mpi = people.mpi
    for params in (
        [("address", "天河区")],
        [("address", "天河")],
        [("address", "广州市天河区体育西路")],
        [("address-city", "广州")],
        [("address-state", "广东省")],
        [("address-state", "广东"), ("address-city", "广州市"), ("active", "true")],
    ):
        assert ids(await _search(mpi, ("birthdate", BORN), *params)) == [people.c], params
    for params in (
        [("address:exact", "天河")],
        [("address-city", "深圳")],
        [("address", "海淀区")],
    ):
        assert ids(await _search(mpi, ("birthdate", BORN), *params)) == [], params
    everyone = await _search(mpi, ("birthdate", BORN), ("active", "true"))
    assert everyone["total"] == 3
    # mrb answers with surviving people only: none is inactive.
    inactive = await _search(mpi, ("birthdate", BORN), ("active", "false"))
    assert inactive["total"] == 0 and ids(inactive) == []


async def test_an_unknown_identifier_domain_is_404(people: People) -> None:
    mpi = people.mpi
    for params in (
        [("identifier", "urn:x:unknown|123")],  # a system mrb does not know, nobody found
        [("birthdate", BORN), ("identifier", "urn:x:unknown|")],  # a domain to return
        [("birthdate", BORN), ("identifier", f"{f.NATIONAL}|,urn:x:unknown|")],
    ):
        outcome = await _search(mpi, *params, status=404)
        first = outcome["issue"][0]
        assert (first["severity"], first["code"], first["diagnostics"]) == (
            "warning",
            "not-found",
            "targetSystem not found",
        ), params
    # A known system that finds nobody is an empty searchset (ITI-78 Case 3).
    known = await _search(mpi, ("identifier", f"{f.NATIONAL}|{NOBODY}"))
    assert known["total"] == 0
    # A hospital's own local system is recognised by finding someone in it.
    assert ids(await _search(mpi, ("identifier", f"{MRN_SYSTEM}|MRN-C"))) == [people.c]
    # Domains to return (Case 2): only those identifiers on the Patients answered.
    mrn_only = await _search(mpi, ("identifier", A), ("identifier", f"{MRN_SYSTEM}|"))
    (patient,) = [e["resource"] for e in mrn_only["entry"]]
    assert {i["system"] for i in patient["identifier"]} == {MRN_SYSTEM}
    national = await _search(mpi, ("identifier", f"{MRN_SYSTEM}|MRN-1"), ("identifier", "sfzh|"))
    (patient,) = [e["resource"] for e in national["entry"]]
    assert {(i["system"], i["value"]) for i in patient["identifier"]} == {(f.NATIONAL, f.PATIENT_A)}
    # The 404s are audited too.
    rows = await mpi.audit("fhir-pdq-query")
    assert [r.detail.get("outcome") for r in rows[:3]] == ["domain-unknown"] * 3
