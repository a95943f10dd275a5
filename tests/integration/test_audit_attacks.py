"""An attacker with DDL rights drops the audit triggers and rewrites history, on SQLite and
PostgreSQL; verification names what they did from the exported checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, text, update

from broker.bootstrap import AuditTrail, Container
from broker.domain.actors import Actor, Role
from broker.domain.audit_chain import ChainReport, Finding
from broker.services.audit_sealer import ChainBehindExport
from broker.storage.audit_chain import CheckpointKey, seal, verify
from broker.storage.audit_log import record_read
from broker.storage.tables import audit_checkpoint, audit_event
from tests.conftest import Db

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
TRIGGERS = {
    "postgres": (
        "DROP TRIGGER audit_event_guard ON audit_event",
        "DROP TRIGGER audit_event_insert_guard ON audit_event",
        "DROP TRIGGER audit_checkpoint_guard ON audit_checkpoint",
    ),
    "sqlite": tuple(
        f"DROP TRIGGER {name}"
        for name in (
            "audit_event_no_delete",
            "audit_event_sealed",
            "audit_event_unsealed",
            "audit_event_insert_unsealed",
            "audit_checkpoint_no_update",
            "audit_checkpoint_no_delete",
        )
    ),
}


async def audit(c: Container, n: int) -> None:
    async with c.sessions() as s, s.begin():
        for i in range(n):
            await record_read(
                s, DOCTOR, action="fhir-read", purpose="treatment",
                patient_pseudonym="ab" * 32, person_id=f"p{i}", detail={"n": i},
            )  # fmt: skip


@pytest.fixture
async def trail(container: Container, db: Db) -> AuditTrail:
    """Eight entries sealed in three rounds (checkpoints 3, 5, 8, all exported); then the
    attacker drops every audit trigger."""
    trail = AuditTrail(container.settings, container.sessions)
    sealer = trail.sealer()
    for n in (3, 2, 3):
        await audit(container, n)
        assert await sealer.seal_once() == n
    assert (await report(trail)).intact
    async with container.sessions() as s, s.begin():
        for statement in TRIGGERS[db.kind]:
            await s.execute(text(statement))
    return trail


async def report(trail: AuditTrail) -> ChainReport:
    async with trail.sessions() as s:
        return await verify(s, trail.pinned_keys(), trail.export())


async def test_cutting_off_the_last_entries_and_their_checkpoints_is_truncation(
    trail: AuditTrail, container: Container
) -> None:
    async with trail.sessions() as s, s.begin():
        await s.execute(delete(audit_event).where(audit_event.c.seq > 5))
        await s.execute(delete(audit_checkpoint).where(audit_checkpoint.c.seq > 5))
    truncated = (
        "truncated: truncated since seq 6: the chain ends at seq 5, but exported checkpoint 8 "
        "proves entries up to seq 8 existed; checkpoint(s) 8 are gone from the database too",
    )
    found = await report(trail)
    assert found.kinds == {Finding.TRUNCATED} and found.problems == truncated
    # The honest sealer does not sign a second history over the seqs the export holds.
    await audit(container, 3)
    with pytest.raises(ChainBehindExport, match=r"end at seq 5 but the export .* holds seq 8"):
        await trail.sealer().seal_once()
    found = await report(trail)
    assert found.problems == truncated and found.unsealed == 3


async def test_an_edit_resealed_with_the_attackers_own_key_is_named(trail: AuditTrail) -> None:
    attacker = CheckpointKey(Ed25519PrivateKey.generate())
    async with trail.sessions() as s, s.begin():
        await s.execute(update(audit_event).where(audit_event.c.seq == 4).values(actor="nobody"))
        await s.execute(
            update(audit_event)
            .where(audit_event.c.seq >= 4)
            .values(seq=None, prev_hash=None, hash=None)
        )
        await s.execute(delete(audit_checkpoint).where(audit_checkpoint.c.seq >= 4))
        assert await seal(s, attacker) == 5  # re-linked and re-signed: internally consistent
    found = await report(trail)
    assert {Finding.RESIGNED, Finding.EDITED} <= found.kinds
    assert (
        f"re-signed: checkpoint 8 is signed by key {attacker.key_id}, which is not a pinned "
        "checkpoint key"
    ) in found.problems
    assert (
        "edited: the chain's hash at seq 5 is not the exported checkpoint's: an entry in seq "
        "4–5 was changed and the chain re-linked after it"
    ) in found.problems


async def test_an_edit_resealed_with_the_real_key_is_caught_by_the_export(
    trail: AuditTrail,
) -> None:
    key = trail.sealer_key()  # the embedded set-up holds it: the attack of the report
    assert key is not None
    async with trail.sessions() as s, s.begin():
        await s.execute(update(audit_event).where(audit_event.c.seq == 7).values(purpose="x"))
        await s.execute(
            update(audit_event)
            .where(audit_event.c.seq >= 6)
            .values(seq=None, prev_hash=None, hash=None)
        )
        await s.execute(delete(audit_checkpoint).where(audit_checkpoint.c.seq >= 6))
        await seal(s, key)
    found = await report(trail)
    assert found.kinds == {Finding.RESIGNED, Finding.EDITED}
    assert any(
        p.startswith("re-signed: checkpoint 8 in the database") and "it was re-signed" in p
        for p in found.problems
    )
    assert "an entry in seq 6–8 was changed" in " ".join(found.problems)


async def test_a_deleted_entry_in_the_middle_is_named(trail: AuditTrail) -> None:
    async with trail.sessions() as s, s.begin():
        await s.execute(delete(audit_event).where(audit_event.c.seq == 4))
    found = await report(trail)
    assert found.problems == ("deleted: seq 4 deleted: the chain jumps from seq 3 to 5",)


async def test_a_missing_export_is_a_finding(trail: AuditTrail) -> None:
    export = trail.export()
    assert export is not None
    Path(export.location).unlink()
    found = await report(trail)
    assert found.kinds == {Finding.EXPORT}
    assert "does not exist" in found.problems[0]


async def test_an_unreadable_export_line_is_a_finding(trail: AuditTrail) -> None:
    export = trail.export()
    assert export is not None
    with Path(export.location).open("a") as fh:
        fh.write('{"seq": "eight"}\n')
    found = await report(trail)
    assert found.problems == ("export: export line 4 is not a checkpoint record",)
