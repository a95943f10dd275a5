"""Rotating the payload key: every sealed row moves to the new key, nothing becomes
unreadable (not even to a process started before the rotation), a rerun is a no-op, and
once the old key is removed every sealed store still opens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.identifiers import normalise
from broker.domain.recognition import Decision, Order
from broker.ports.cds import StoredCard
from broker.ports.his_launch import launch_context
from broker.security.payload_cipher import PayloadCipher, Sealed, add_key
from broker.security.sealed_fields import open_json, seal_json
from broker.services.checks import CheckRequest, run_check
from broker.storage import dead_letters, demographics
from broker.storage.cds_store import SqlCards
from broker.storage.cds_tables import cds_client
from broker.storage.check_uow import SqlCheckUnitOfWork
from broker.storage.launch_tables import his_launch_session
from broker.storage.people import People, birth_date
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.rekey import SEALED, keys_in_use, reseal_all
from broker.storage.tables import person_demographics, recognition_check
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
    card_uuid, session_hash = await _card_and_launch(container)
    assert set((await keys_in_use(container.sessions)).elements()) == {"k1"}

    kid = add_key(container.settings.keys_dir)
    fresh = PayloadCipher.from_dir(container.settings.keys_dir, create=False)
    assert (kid, fresh.active_key_id) == ("k2", "k2")
    done = await reseal_all(container.sessions, fresh)
    assert set(done) == {table for table, _ in SEALED} and all(done.values()), done
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
    await _every_store_opens_without_k1(container, card_uuid, session_hash)


LAUNCH = {"patient": "sealed with the rest", "items": ["718-7"]}


async def _card_and_launch(c: Container) -> tuple[str, str]:
    """A CDS Hooks card (of the check just made) and an HIS launch session, both sealed."""
    now = datetime.now(UTC)
    session_hash = "ab" * 32
    async with c.sessions() as s, s.begin():
        check_id = (await s.execute(select(recognition_check.c.id))).scalars().first()
        assert check_id is not None
        await SqlCards(s, c.cipher).add(
            StoredCard(
                "card-1", None, "mrb-order-select", "his", "H002", "dr-li", check_id, 0,
                "recognition", None, {"summary": "Hb 13.2 g/dL at H001"}, now,
            )
        )  # fmt: skip
        await s.execute(
            insert(cds_client).values(
                issuer="his", hospital_id="H002", added_by="test", added_at=now
            )
        )
        await s.execute(
            insert(his_launch_session).values(
                id_hash=session_hash,
                issuer="his",
                hospital_id="H002",
                user_id="dr-li",
                launch=seal_json(c.cipher, LAUNCH, context=launch_context(session_hash)),
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
    return "card-1", session_hash


async def _every_store_opens_without_k1(c: Container, card_uuid: str, session_hash: str) -> None:
    """With payload-k1.key gone (as an operator removes it once `mrb keys usage` shows no
    row needs it), the demographics, the card and the launch still open."""
    keys = c.settings.keys_dir
    (keys / "payload-k1.key").rename(keys.parent / "payload-k1.key.removed")
    only_k2 = PayloadCipher.from_dir(keys, create=False)
    assert only_k2.key_ids == ("k2",)
    async with c.sessions() as s:
        rows = (await s.execute(select(person_demographics))).all()
        assert rows  # the Patient's name was sealed at ingest
        for r in rows:
            sealed = Sealed(r.key_id, r.algorithm, r.nonce, r.ciphertext)
            assert only_k2.open(sealed, associated=demographics.context(r.person_id, r.hospital_id))
        card = (await SqlCards(s, only_k2).by_uuid([card_uuid]))[card_uuid]
        assert card.content == {"summary": "Hb 13.2 g/dL at H001"}
        launch = (
            await s.execute(
                select(his_launch_session.c.launch).where(
                    his_launch_session.c.id_hash == session_hash
                )
            )
        ).scalar_one()
        assert open_json(only_k2, launch, context=launch_context(session_hash)) == LAUNCH
    # The dead letter (`{"hb": 13.2}`, rejected before the rotation): `mrb dlq replay`
    # reads the rejection table's copy, which was re-sealed; the Kafka DLQ topic's copy
    # keeps k1 (docs/security.md).
    async with c.sessions() as s, s.begin():
        replays = await dead_letters.claim_for_replay(
            s, only_k2, by="rotation-test", now=datetime.now(UTC)
        )
    assert [r.value for r in replays] == [b'{"hb": 13.2}']
