"""The demo's rules v2 story holds: the scenario messages, indexed through the real ingest
path with the demo's registry, answer each check as the demo prints it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.bootstrap import Container
from broker.demo import registry as demo_registry
from broker.demo import rights, scenarios
from broker.demo.dataset import demo_hospitals
from broker.domain.actors import Actor, Role
from broker.domain.consent import ConsentKind
from broker.domain.recognition import Order
from broker.services.checks import CheckRequest, run_check
from broker.services.consents import NewConsent
from broker.storage import hospitals
from tests import factories as f

NOW = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)


def _order(item: dict[str, object]) -> Order:
    if "modality" in item:
        site, side = item["body_site"], item.get("laterality")
        return Order(
            modality=str(item["modality"]),
            body_site=site["code"],  # type: ignore[index]
            laterality=side["code"] if side else None,  # type: ignore[index]
        )
    return Order(system=str(item["system"]), code=str(item["code"]))


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_each_case_answers_as_the_demo_says(container: Container) -> None:
    story = scenarios.build(20260520, NOW)
    everyone = (*demo_hospitals(), scenarios.CHONGQING)
    async with container.sessions() as s, s.begin():
        for h in demo_registry.hospitals(everyone):
            await hospitals.add(s, h, replace=True)
        for cert in demo_registry.certifications(NOW.date()):
            await hospitals.certify(s, cert, reference="demo")
        for h in everyone:
            if h.id not in ("H001", "H002"):
                await hospitals.add_key(s, h.id, f.key_id(h.id), f.public_b64(h.id))
    processed = await container.ingest_service().process_batch(
        [f.inbound(m.value, m.hospital, m.message_id) for m in story.messages]
    )
    assert [p.outcome.value for p in processed] == ["indexed"] * len(story.messages)
    for case in story.checks:
        answer = await run_check(
            container.check_uow(),
            container.reference_rules(),
            CheckRequest(
                f.NATIONAL, case.national_id, scenarios.ORDERING, NOW, (_order(case.item),)
            ),
            Actor("dr-demo", Role.DOCTOR, scenarios.ORDERING),
        )
        (item,) = answer.items
        d = item.decision
        said = " ".join([d.explanation.en, *(w.message.en for w in d.warnings)])
        assert d.decision.value == case.decision, (case.name, said)
        assert case.shows in said, (case.name, said)
        if case.name == "newer-result":
            (w,) = d.warnings
            assert (w.hospital, w.value, w.unit, w.flags) == ("H003", "96", "g/L", ("L",))
        if case.name == "sided":
            assert d.candidate is None and [o.near_miss for o in d.others] == [True]


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_the_patient_rights_story_answers_as_the_demo_says(container: Container) -> None:
    """The demo's HIV result (broker/demo/rights.py), with the demo's registry: EXCLUDED for
    H002 without consent, RECOGNIZABLE from H001 with it (broker/cli/demo_rights.py)."""
    story = rights.build(20260520, NOW)
    async with container.sessions() as s, s.begin():
        for h in demo_registry.hospitals((*demo_hospitals(), scenarios.CHONGQING)):
            await hospitals.add(s, h, replace=True)
        for cert in demo_registry.certifications(NOW.date()):
            await hospitals.certify(s, cert, reference="demo")
    m = story.message
    (p,) = await container.ingest_service().process_batch(
        [f.inbound(m.value, m.hospital, m.message_id)]
    )
    assert p.outcome.value == "indexed", p.detail

    async def decided() -> tuple[str, str | None]:
        answer = await run_check(
            container.check_uow(),
            container.reference_rules(),
            CheckRequest(f.NATIONAL, story.national_id, rights.VIEWER, NOW, (_order(story.item),)),
            Actor("dr-demo", Role.DOCTOR, rights.VIEWER),
            consents=container.consent_reader(),
        )
        (item,) = answer.items
        cand = item.decision.candidate
        return item.decision.decision.value, cand.hospital if cand else None

    assert await decided() == ("EXCLUDED", None)
    await container.consent_service().record(
        Actor("dr-demo", Role.DOCTOR, rights.ISSUER),
        NewConsent(
            f.NATIONAL,
            story.national_id,
            ConsentKind.SENSITIVE,
            "DEMO-FORM",
            category=rights.CATEGORY,
            expires_at=datetime.now(UTC) + timedelta(days=30),
        ),
    )
    assert await decided() == ("RECOGNIZABLE", rights.ISSUER)
