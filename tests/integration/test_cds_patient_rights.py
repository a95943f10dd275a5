"""CDS Hooks after the patient's opt-out and consent (issue "Patient rights"), over HTTP
with real signed client JWTs, on SQLite and PostgreSQL.

H001 holds patient A's blood count and chest CT; H002's HIS asks (tests/integration/
test_cds_hooks.py). After an opt-out, H002 gets exactly what it gets for a patient with no
results elsewhere (no card, no patient-view summary) while H001 still sees its own; an HIV
result is carded for H002 only while the patient's HIV consent is in force, and a
withdrawal counts on the very next call; CDS is for treatment and never breaks the glass,
not even for an urgent order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.domain.actors import Actor, Role
from broker.domain.consent import ConsentKind, ConsentRecord
from broker.services.consents import NewConsent
from broker.storage.cds_store import SqlCdsClients
from broker.storage.tables import audit_event
from tests import factories as f
from tests.integration.test_cds_hooks import (  # the EHR, registered as a CDS client
    EC_KEY,
    PATIENT_ID,
    SELECT,
    SIGN,
    VIEW,
    Ehr,
    certify,
    ct_chest_order,
    ehr,
    hook_request,
    index,
    lab_order,
    public_jwk,
    settings,
)
from tests.integration.test_sensitive_results import hiv_bundle

__all__ = ["ehr", "settings"]  # fixtures

H001_ISS = "https://his.h001.example.cn/"  # the issuing hospital's own EHR
DR_ZHAO = Actor("dr.zhao", Role.DOCTOR, "H001")  # records what the patient signed at H001
HIV_ORDER = ("hiv-1", "56888-1")  # LAB-ANTI-HIV: sensitive (schemas/catalog/sensitive.yaml)
STRANGER = f.patient(national_id=f.PATIENT_B, mrn="MRN-B", pid=PATIENT_ID)  # no results


async def record(c: Container, kind: ConsentKind, **kw: Any) -> ConsentRecord:
    new = NewConsent(f.NATIONAL, f.PATIENT_A, kind, "FORM-2026-017", **kw)
    return await c.consent_service().record(DR_ZHAO, new)


def in_a_year() -> datetime:
    return datetime.now(UTC) + timedelta(days=365)


async def answers(ehr: Ehr, patient: dict[str, Any] | str = "default") -> list[Any]:
    """What H002's EHR is told at order-select, order-sign and patient-view (whole bodies)."""
    out = []
    for service, body in (
        (SELECT, hook_request("order-select", lab_order("hgb-1"), patient=patient)),
        (SIGN, hook_request("order-sign", ct_chest_order("ct-1"), patient=patient)),
        (VIEW, hook_request("patient-view", patient=patient)),
    ):
        r = await ehr.call(service, body)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


async def register_h001(ehr: Ehr) -> None:
    async with ehr.container.sessions() as s, s.begin():
        await cds_clients.register_client(
            SqlCdsClients(s), H001_ISS, "H001", jwks={"keys": [public_jwk(EC_KEY, "his-1")]}
        )


def hiv_order(rid: str = HIV_ORDER[0]) -> dict[str, Any]:
    return lab_order(rid, HIV_ORDER[1])


async def test_after_an_opt_out_another_hospital_is_told_what_it_is_for_nobody(
    ehr: Ehr,
) -> None:
    shared = await answers(ehr)
    assert [len(a["cards"]) for a in shared] == [1, 1, 1]
    nobody = await answers(ehr, STRANGER)
    assert nobody == [{"cards": []}] * 3

    await record(ehr.container, ConsentKind.OPT_OUT)
    # The order-select and order-sign checks above are not reused: decided again.
    assert await answers(ehr) == nobody

    # The issuing hospital still sees its own result at order entry.
    await register_h001(ehr)
    body = hook_request("order-select", lab_order("hgb-9"))
    r = await ehr.call(SELECT, body, iss=H001_ISS)
    assert r.status_code == 200, r.text
    (own,) = r.json()["cards"]
    assert own["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/hgb-9"
    assert "H001" in own["detail"]


async def test_an_opt_out_withdrawn_shares_again_on_the_next_call(ehr: Ehr) -> None:
    shared = await answers(ehr)
    opt_out = await record(ehr.container, ConsentKind.OPT_OUT)
    assert await answers(ehr) == [{"cards": []}] * 3
    await ehr.container.consent_service().withdraw(DR_ZHAO, opt_out.id)
    again = await answers(ehr)
    assert [len(a["cards"]) for a in again] == [len(a["cards"]) for a in shared]
    assert again[2]["cards"][0]["summary"] == shared[2]["cards"][0]["summary"]


async def test_a_sensitive_result_is_carded_only_while_its_consent_is_in_force(
    ehr: Ehr,
) -> None:
    await certify(ehr.container, "IMMUNOLOGY")  # else H001's HIV test could not be recognised
    select = hook_request("order-select", hiv_order())
    assert await ehr.cards(SELECT, select) == []
    (view_before,) = await ehr.cards(VIEW, hook_request("patient-view"))

    await index(ehr.container, hiv_bundle("HIV-1", with_hb=False))
    assert await ehr.cards(SELECT, hook_request("order-select", hiv_order())) == []
    (view_hidden,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert (view_hidden["summary"], view_hidden["detail"]) == (
        view_before["summary"],
        view_before["detail"],
    )

    given = await record(
        ehr.container, ConsentKind.SENSITIVE, category="HIV", expires_at=in_a_year()
    )
    (card,) = await ehr.cards(SELECT, hook_request("order-select", hiv_order()))
    assert card["indicator"] == "info" and "H001" in card["detail"]
    assert "人类免疫缺陷病毒抗体" in card["summary"]
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "ServiceRequest/hiv-1"
    (view_shown,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert "有 3 份" in view_shown["summary"] and "有 2 份" in view_before["summary"]

    # Withdrawn: the very next call (order-sign of the same draft order) says nothing, and
    # the check made at order-select while the consent held is not reused.
    await ehr.container.consent_service().withdraw(DR_ZHAO, given.id)
    assert await ehr.cards(SIGN, hook_request("order-sign", hiv_order())) == []
    (view_after,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert view_after["summary"] == view_before["summary"]
    assert view_after["detail"] == view_before["detail"]


def break_glass_reads() -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "mrb_break_glass_reads"
        for s in metric.samples
        if s.name == "mrb_break_glass_reads_total"
    )


async def test_cds_never_breaks_the_glass_not_even_for_an_urgent_order(ehr: Ehr) -> None:
    """CDS Hooks read for treatment (asserted by the EHR); an urgent draft order is an
    emergency without a reason: it sees nothing the patient has not shared, whatever the
    request carries, and is neither flagged nor counted as break-glass."""
    await certify(ehr.container, "IMMUNOLOGY")
    await index(ehr.container, hiv_bundle("HIV-1", with_hb=False))
    await record(ehr.container, ConsentKind.OPT_OUT)
    before = break_glass_reads()
    urgent = {"priority": "stat"}
    body = hook_request(
        "order-sign", lab_order("hgb-1") | urgent, hiv_order() | urgent, ct_chest_order("ct-1")
    )
    # What an EHR might add to claim an emergency read: CDS Hooks has no such field.
    body["context"] |= {"purposeOfUse": "BTG", "breakGlassReason": "unconscious"}
    body["extension"] = {"purposeOfUse": "BTG", "reason": "unconscious"}
    assert await ehr.cards(SIGN, body) == []
    assert break_glass_reads() == before
    checks = [r for r in await ehr.rows(audit_event) if r["action"] == "recognition-check"]
    assert [(c["purpose"], "break_glass_reason" in c["detail"]) for c in checks] == [
        ("emergency-treatment", False)
    ]
    assert not [r for r in await ehr.rows(audit_event) if r["purpose"] == "break-glass"]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_consent_for_another_category_reveals_nothing(ehr: Ehr) -> None:
    await certify(ehr.container, "IMMUNOLOGY")
    await index(ehr.container, hiv_bundle("HIV-1", with_hb=False))
    await record(ehr.container, ConsentKind.SENSITIVE, category="HBV", expires_at=in_a_year())
    assert await ehr.cards(SELECT, hook_request("order-select", hiv_order())) == []
    (view,) = await ehr.cards(VIEW, hook_request("patient-view"))
    assert "有 2 份" in view["summary"]
