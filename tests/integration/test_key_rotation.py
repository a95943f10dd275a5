"""Rotating the payload key: every sealed row moves to the new key, nothing becomes
unreadable (not even to a process started before the rotation), and a rerun is a no-op."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.identifiers import normalise
from broker.domain.recognition import Decision, Order
from broker.security.payload_cipher import PayloadCipher, add_key
from broker.services.checks import CheckRequest, run_check
from broker.storage.check_uow import SqlCheckUnitOfWork
from broker.storage.people import People, birth_date
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.rekey import keys_in_use, reseal_all
from tests import factories as f
from tests.conftest import certify

HB = Order(system="http://loinc.org", code="718-7")


async def test_rotation_reseals_everything_and_loses_nothing(container: Container) -> None:
    await certify(container)
    patient = f.patient() | {"birthDate": f.PATIENT_A_BORN}
    p, dead = await container.ingest_service().process_batch(
        [f.inbound(f.lab_bundle(pat=patient)), f.inbound(b'{"hb": 13.2}')]  # a dead letter too
    )
    assert (p.outcome.value, dead.outcome.value) == ("indexed", "rejected")
    request = CheckRequest(
        f.NATIONAL, f.PATIENT_A, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)
    )
    doctor = Actor("dr-li", Role.DOCTOR, "H002")
    rules = container.reference_rules()
    before = await run_check(container.check_uow(), rules, request, doctor)
    assert before.items[0].decision.decision is Decision.RECOGNIZABLE
    old = container.cipher  # a running process: it loaded k1 only
    assert set((await keys_in_use(container.sessions)).elements()) == {"k1"}

    kid = add_key(container.settings.keys_dir)
    fresh = PayloadCipher.from_dir(container.settings.keys_dir, create=False)
    assert (kid, fresh.active_key_id) == ("k2", "k2")
    done = await reseal_all(container.sessions, fresh)
    assert {
        "payload",
        "result",
        "result_item",
        "person_birth_date",
        "recognition_check",
        "rejection",
    } <= set(done) and all(done.values())
    used = await keys_in_use(container.sessions)
    assert used["k1"] == 0 and used["k2"] > 0
    assert sum((await reseal_all(container.sessions, fresh)).values()) == 0  # idempotent

    # The process started before the rotation still reads every row (it loads k2 lazily).
    async with container.sessions() as s:
        ident = normalise(f.NATIONAL, f.PATIENT_A, hospital="H002")
        assert ident is not None
        pid = await People(s, container.pseudonyms).find(ident)
        assert pid is not None
        items = await person_items(s, pid, Protector(old, container.pseudonyms))
        assert any(i.value == "13.2" for i in items)
        assert str(await birth_date(s, old, pid)) == f.PATIENT_A_BORN
    uow = SqlCheckUnitOfWork(container.sessions, old, container.pseudonyms)
    after = await run_check(uow, rules, request, doctor)
    assert after.items[0].decision.decision is Decision.RECOGNIZABLE
