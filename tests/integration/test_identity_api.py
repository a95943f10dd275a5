"""Patient identity across hospitals (issue #17) over HTTP, on SQLite and PostgreSQL: the
admin identity API (`/api/v1/admin/identity`: the review queue, decisions, link, unlink;
problem bodies, the audit, 403 for anyone but the platform admin), the doctor's
`link-undone` notice after an unlink, and the issue's *Done when* through
`POST /api/v1/recognition/check`. The same use cases without HTTP:
tests/integration/test_identity_review.py (whose set-up this reuses)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.storage.tables import audit_event, ledger_entry
from tests import factories as f
from tests.conftest import bearer, certify
from tests.integration.test_identity_review import HEALTH_CARD, MRN, index, patient

URL = "/api/v1/admin/identity"
CHECK = "/api/v1/recognition/check"
PROBLEM = "application/problem+json"
ADMIN = "sys.zhang"
HB = {"system": "http://loinc.org", "code": "718-7"}


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


@pytest.fixture
async def queued(container: Container) -> Container:
    """H001's blood count for 张晓明 (MRN-1); H002's 张晓鸣 (MRN-77): one open review item
    (as `near_duplicate` in test_identity_review.py)."""
    await certify(container)
    await index(container, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(container, f.lab_bundle(accession="ACC-77", pat=patient("MRN-77", "晓鸣")), "H002")
    return container


async def admin(c: Container) -> dict[str, str]:
    return await bearer(c, "platform-admin", "*", ADMIN)


async def doctor(c: Container) -> dict[str, str]:
    return await bearer(c, "doctor", "H002", "dr.li")


def problem(response: httpx.Response, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] == title and body["detail"], body
    return body


async def audited(c: Container, prefix: str = "identity") -> list[Any]:
    """The audit entries of the identity use cases, oldest first."""
    async with c.sessions() as s:
        found = await s.execute(
            select(audit_event)
            .where(audit_event.c.action.like(f"{prefix}%"))
            .order_by(audit_event.c.id)
        )
        return list(found.all())


def check_body(system: str, value: str) -> dict[str, Any]:
    return {
        "patient": {"system": system, "value": value},
        "ordering_hospital": "H002",
        "order_time": "2026-05-20T09:00:00+08:00",
        "items": [HB],
    }


async def found_by_mrn(api: httpx.AsyncClient, dr: dict[str, str]) -> str | None:
    """Where the candidate for H002's MRN-77 comes from, as the doctor at H002 asks."""
    return candidate_hospital(await api.post(CHECK, json=check_body(MRN, "MRN-77"), headers=dr))


def candidate_hospital(response: httpx.Response) -> str | None:
    """The hospital of the first item's candidate (H002's own result for MRN-77 is one)."""
    assert response.status_code == 200, response.text
    cand = response.json()["items"][0]["candidate"]
    return cand["hospital"] if cand else None


async def test_review_confirm_recognise_unlink_and_the_doctors_notice(
    queued: Container, api: httpx.AsyncClient
) -> None:
    c, headers, dr = queued, await admin(queued), await doctor(queued)

    listed = await api.get(f"{URL}/reviews", headers=headers)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()
    assert (item["decision"], item["status"], item["hospital"]) == (
        "POSSIBLE_MATCH",
        "open",
        "H002",
    )
    assert item["decided_at"] is None and item["rules_version"]
    assert "张" not in listed.text and "13800138000" not in listed.text  # no demographics
    assert (await api.get(f"{URL}/reviews?status=confirmed", headers=headers)).json() == []
    assert len((await api.get(f"{URL}/reviews?status=all", headers=headers)).json()) == 1
    assert (await api.get(f"{URL}/reviews?status=bogus", headers=headers)).status_code == 422
    assert (await api.get(f"{URL}/reviews?limit=0", headers=headers)).status_code == 422

    decision = f"{URL}/reviews/{item['review_id']}/decision"
    unknown = await api.post(
        f"{URL}/reviews/no-such-item/decision", json={"decision": "confirm"}, headers=headers
    )
    problem(unknown, 404, "Unknown review item")
    maybe = await api.post(decision, json={"decision": "maybe"}, headers=headers)
    assert maybe.status_code == 422
    assert await found_by_mrn(api, dr) != "H001"

    confirmed = await api.post(decision, json={"decision": "confirm"}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed" and confirmed.json()["link_id"]
    again = await api.post(decision, json={"decision": "reject"}, headers=headers)
    assert "confirmed" in problem(again, 409, "Review item already decided")["detail"]
    assert (await api.get(f"{URL}/reviews", headers=headers)).json() == []

    # The doctor at H002 finds H001's result across the link, and recognises it.
    checked = await api.post(CHECK, json=check_body(MRN, "MRN-77"), headers=dr)
    assert candidate_hospital(checked) == "H001"
    assert checked.json()["items"][0]["decision"] == "RECOGNIZABLE"
    accepted = await api.post(
        f"/api/v1/recognition/{checked.json()['check_id']}/outcome",
        json={"items": [{"index": 0, "outcome": "accepted"}]},
        headers=dr,
    )
    assert accepted.status_code == 200, accepted.text
    assert (await api.get("/api/v1/notifications", headers=dr)).json() == []

    person = {"system": MRN, "value": "MRN-77", "hospital": "H002"}
    unlinked = await api.post(f"{URL}/unlink", json={"person": person}, headers=headers)
    assert unlinked.status_code == 200, unlinked.text
    assert unlinked.json()["link_id"] == confirmed.json()["link_id"]
    assert unlinked.json()["recognitions_undone"] == 1
    problem(
        await api.post(f"{URL}/unlink", json={"person": person}, headers=headers), 404, "Not linked"
    )

    # Not found any more, at once; the doctor reads what happened; the saving is reversed.
    assert await found_by_mrn(api, dr) != "H001"
    notices = await api.get("/api/v1/notifications", headers=dr)
    assert notices.status_code == 200, notices.text
    (notice,) = notices.json()
    assert (notice["kind"], notice["action"], notice["new_status"]) == (
        "link-undone",
        "reverse",
        "unlinked",
    )
    assert notice["check_id"] == checked.json()["check_id"] and notice["read_at"] is None
    assert "另一位患者" in notice["message"]["zh"] and "another person" in notice["message"]["en"]
    assert "withdrawn" not in notice["message"]["en"]
    async with c.sessions() as s:
        entries = (await s.execute(select(ledger_entry).order_by(ledger_entry.c.id))).all()
    assert [(e.kind, e.reason) for e in entries][-1] == ("reversal", "patient link undone")
    assert sum(e.amount_fen for e in entries) == 0

    trail = await audited(c)
    assert [e.action for e in trail] == [
        "identity-review-list",
        "identity-review-list",
        "identity-review-list",
        "identity.review.confirm",
        "identity-review-list",
        "identity.unlink",
    ]
    assert {e.actor for e in trail} == {ADMIN} and {e.role for e in trail} == {"platform-admin"}
    confirm, unlink = trail[3], trail[5]
    assert confirm.detail["review_id"] == item["review_id"]
    assert confirm.detail["link_id"] == confirmed.json()["link_id"] and confirm.detail["token"]
    assert unlink.detail["recognitions_undone"] == 1
    assert "MRN-77" not in str(unlink.detail)  # the identifier given never reaches the audit


async def test_reject_link_by_person_id_and_unlink(
    queued: Container, api: httpx.AsyncClient
) -> None:
    c, headers, dr = queued, await admin(queued), await doctor(queued)
    (item,) = (await api.get(f"{URL}/reviews", headers=headers)).json()
    rejected = await api.post(
        f"{URL}/reviews/{item['review_id']}/decision", json={"decision": "reject"}, headers=headers
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json() == {
        "review_id": item["review_id"],
        "status": "rejected",
        "link_id": None,
    }
    assert await found_by_mrn(api, dr) != "H001"

    into, person = {"person_id": item["candidate_id"]}, {"person_id": item["person_id"]}
    made = await api.post(f"{URL}/links", json={"into": into, "person": person}, headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["person_id"] == item["person_id"]
    assert made.json()["into_person_id"] == item["candidate_id"]
    assert await found_by_mrn(api, dr) == "H001"

    # Already one person, either way round; by identifier too.
    problem(
        await api.post(f"{URL}/links", json={"into": into, "person": person}, headers=headers),
        409,
        "Already one person",
    )
    by_mrn = {"system": MRN, "value": "MRN-1", "hospital": "H001"}
    problem(
        await api.post(f"{URL}/links", json={"into": person, "person": by_mrn}, headers=headers),
        409,
        "Already one person",
    )
    # Unknown people: by id, by an identifier nobody has, an MRN without its hospital.
    nobody = {"person_id": "00000000-0000-0000-0000-000000000000"}
    problem(
        await api.post(f"{URL}/links", json={"into": into, "person": nobody}, headers=headers),
        404,
        "Unknown person",
    )
    stranger = {"system": MRN, "value": "MRN-404", "hospital": "H001"}
    problem(
        await api.post(f"{URL}/links", json={"into": stranger, "person": person}, headers=headers),
        404,
        "Unknown patient",
    )
    # A person named both ways, or neither: a problem body saying how to name one.
    both = {"person_id": item["person_id"], "system": MRN, "value": "MRN-77"}
    problem(
        await api.post(f"{URL}/links", json={"into": into, "person": both}, headers=headers),
        422,
        "Invalid person",
    )
    problem(
        await api.post(f"{URL}/unlink", json={"person": {}}, headers=headers), 422, "Invalid person"
    )

    # Given the survivor of its one link, unlink undoes that link; no recognition used it.
    unlinked = await api.post(f"{URL}/unlink", json={"person": into}, headers=headers)
    assert unlinked.status_code == 200, unlinked.text
    assert unlinked.json() == {
        "link_id": made.json()["link_id"],
        "person_id": item["person_id"],
        "from_person_id": item["candidate_id"],
        "recognitions_undone": 0,
    }
    assert await found_by_mrn(api, dr) != "H001"
    assert (await api.get("/api/v1/notifications", headers=dr)).json() == []

    changes = [e for e in await audited(c) if e.action.startswith("identity.")]
    assert [e.action for e in changes] == [
        "identity.review.reject",
        "identity.link",
        "identity.unlink",
    ]
    link, unlink = changes[1], changes[2]
    assert link.detail["link_id"] == made.json()["link_id"] and link.actor == ADMIN
    assert (unlink.detail["link_id"], unlink.detail["recognitions_undone"]) == (
        made.json()["link_id"],
        0,
    )


@pytest.mark.parametrize(
    ("role", "hospital"),
    [("doctor", "H002"), ("admin", "H002"), ("admin", "H001"), ("audit", "*")],
)
async def test_only_the_platform_admin_may(
    queued: Container, api: httpx.AsyncClient, role: str, hospital: str
) -> None:
    c = queued
    (item,) = (await api.get(f"{URL}/reviews", headers=await admin(c))).json()
    before = len(await audited(c))
    headers = await bearer(c, role, hospital)
    into, person = {"person_id": item["candidate_id"]}, {"person_id": item["person_id"]}
    for response in (
        await api.get(f"{URL}/reviews", headers=headers),
        await api.post(
            f"{URL}/reviews/{item['review_id']}/decision",
            json={"decision": "confirm"},
            headers=headers,
        ),
        await api.post(f"{URL}/links", json={"into": into, "person": person}, headers=headers),
        await api.post(f"{URL}/unlink", json={"person": person}, headers=headers),
    ):
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
    assert len(await audited(c)) == before  # nothing decided, nothing read
    (still,) = (await api.get(f"{URL}/reviews", headers=await admin(c))).json()
    assert still["status"] == "open"


async def test_done_when_a_health_card_finds_another_hospitals_result_over_http(
    container: Container, api: httpx.AsyncClient
) -> None:
    """Issue #17's *Done when*, as a doctor's EHR asks: H001 published under its MRN and
    the resident ID; H002's own message named the same resident ID with a health card; a
    doctor at H002 who knows only the health-card number gets H001's result."""
    await certify(container)
    await index(container, f.lab_bundle(), "H001")  # MRN-1 and PATIENT_A
    at_h002 = f.patient(mrn="H2-MRN-9", pid="p-h2") | {
        "identifier": [
            {"system": f.NATIONAL, "value": f.PATIENT_A},
            {"system": HEALTH_CARD, "value": "HC0012345678"},
        ]
    }
    await index(container, f.lab_bundle(accession="ACC-H2", pat=at_h002), "H002")
    dr = await doctor(container)

    answer = await api.post(CHECK, json=check_body(HEALTH_CARD, "HC0012345678"), headers=dr)
    assert candidate_hospital(answer) == "H001"
    (item,) = answer.json()["items"]
    assert item["decision"] == "RECOGNIZABLE" and item["fee_saved"]
    # A health card never seen is nobody: no guess.
    unknown = await api.post(CHECK, json=check_body(HEALTH_CARD, "HC0099999999"), headers=dr)
    assert candidate_hospital(unknown) is None
    assert unknown.json()["items"][0]["decision"] != "RECOGNIZABLE"
