"""Each hospital's demographics of a person are stored sealed, with their matching blocks as
keyed pseudonyms, on SQLite and PostgreSQL: nothing demographic in clear, the latest
replaces the last, and the blocks are what the matching engine would compute."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import event, select, update

import tests.factories as f
from broker.bootstrap import Container
from broker.domain import matching
from broker.domain.demographics import Demographics
from broker.reference.matching_rules import shipped_matching_rules
from broker.security.payload_cipher import Sealed
from broker.storage import demographics
from broker.storage.tables import person_block, person_demographics


def patient(phone: str, **extra: Any) -> dict[str, Any]:
    return (
        f.patient()
        | {
            "name": [{"use": "official", "family": "张", "given": ["晓明"]}],
            "gender": "female",
            "birthDate": f.PATIENT_A_BORN,
            "telecom": [
                {"system": "email", "value": "x@example.cn"},
                {"system": "phone", "value": phone},
            ],
            "address": [{"use": "home", "text": "四川省成都市武侯区人民南路四段12号"}],
        }
        | extra
    )


async def index(c: Container, value: bytes, hospital: str = "H001") -> None:
    (p,) = await c.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


async def stored(c: Container) -> tuple[list[Any], list[Any]]:
    async with c.sessions() as s:
        rows = (await s.execute(select(person_demographics))).all()
        blocks = (await s.execute(select(person_block))).all()
    return list(rows), list(blocks)


def opened(c: Container, row: Any) -> Demographics:
    sealed = Sealed(row.key_id, row.algorithm, row.nonce, row.ciphertext)
    return demographics.open_sealed(c.cipher, row.person_id, row.hospital_id, sealed)


def expected_blocks(c: Container, d: Demographics) -> set[str]:
    rules = shipped_matching_rules()
    keys = matching.blocking_keys(matching.prepare(d, rules), rules.blocking)
    return {c.pseudonyms.of_text(demographics.BLOCK_DOMAIN, k) for k in keys}


async def test_demographics_are_sealed_and_blocked_by_pseudonym(container: Container) -> None:
    await index(container, f.lab_bundle(pat=patient("+86 138 0013 8000")))
    (row,), blocks = await stored(container)
    for clear in ("张".encode(), "晓明".encode(), b"13800138000", b"1949", "武侯".encode()):
        assert clear not in row.ciphertext
    d = opened(container, row)
    assert (d.family, d.given, d.sex, d.birth_date) == ("张", "晓明", "female", date(1949, 12, 31))
    assert d.phone == "+86 138 0013 8000" and d.address and "武侯区" in d.address
    assert {b.pseudonym for b in blocks} == expected_blocks(container, d)
    assert all(len(b.pseudonym) == 64 and ":" not in b.pseudonym for b in blocks)


async def test_the_latest_record_replaces_the_blocks_of_the_last(container: Container) -> None:
    await index(container, f.lab_bundle(pat=patient("13800138000")))
    _, before = await stored(container)
    await index(container, f.lab_bundle(accession="ACC-2", pat=patient("13900139000")))
    (row,), after = await stored(container)
    assert opened(container, row).phone == "13900139000"
    old_phone = container.pseudonyms.of_text(demographics.BLOCK_DOMAIN, "ph:13800138000")
    new_phone = container.pseudonyms.of_text(demographics.BLOCK_DOMAIN, "ph:13900139000")
    assert old_phone in {b.pseudonym for b in before}
    assert old_phone not in {b.pseudonym for b in after}
    assert new_phone in {b.pseudonym for b in after}


async def test_each_hospital_keeps_its_own_record(container: Container) -> None:
    await index(container, f.lab_bundle(pat=patient("13800138000")))
    other = patient("13700137000", name=[{"text": "ZHANG XIAOMING"}])
    await index(container, f.lab_bundle(accession="B-1", pat=other), hospital="H002")
    rows, blocks = await stored(container)
    assert sorted(r.hospital_id for r in rows) == ["H001", "H002"]
    assert len({r.person_id for r in rows}) == 1  # one person: the resident ID links them
    by_hospital = {r.hospital_id: opened(container, r) for r in rows}
    assert by_hospital["H002"].full_name == "ZHANG XIAOMING" and by_hospital["H002"].family is None
    assert {b.hospital_id for b in blocks} == {"H001", "H002"}


async def test_a_patient_without_name_phone_or_address_stores_none(container: Container) -> None:
    nameless = {k: v for k, v in f.patient().items() if k != "name"} | {"gender": "female"}
    await index(container, f.lab_bundle(pat=nameless))
    assert await stored(container) == ([], [])


async def _written(c: Container, value: bytes) -> list[str]:
    """The statements that write demographics, blocks or birth dates while indexing."""
    sent: list[str] = []
    watched = ("person_demographics", "person_block", "person_birth_date")

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        if words[0].upper() in ("INSERT", "UPDATE", "DELETE") and any(
            t in statement for t in watched
        ):
            sent.append(" ".join(words[:3]))

    engine = c.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        await index(c, value)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return sent


async def test_the_same_demographics_again_are_not_sealed_again(container: Container) -> None:
    """Most messages of a known patient carry the same Patient: nothing is re-sealed or
    re-written (demographics, blocks, birth date), and what is stored stays as it was."""
    assert await _written(container, f.lab_bundle(pat=patient("13800138000")))  # first: written
    (before,), blocks_before = await stored(container)
    again = await _written(container, f.lab_bundle(accession="ACC-2", pat=patient("13800138000")))
    assert again == []
    (after,), blocks_after = await stored(container)
    assert (after.nonce, after.ciphertext) == (before.nonce, before.ciphertext)
    assert sorted(blocks_after) == sorted(blocks_before)


async def test_changed_demographics_are_sealed_and_blocked_again(container: Container) -> None:
    await index(container, f.lab_bundle(pat=patient("13800138000")))
    (before,), _ = await stored(container)
    changed = await _written(container, f.lab_bundle(accession="ACC-2", pat=patient("13900139000")))
    assert any("person_demographics" in s for s in changed)
    assert any(s.startswith("DELETE") and "person_block" in s for s in changed)
    (after,), blocks = await stored(container)
    assert after.ciphertext != before.ciphertext
    assert opened(container, after).phone == "13900139000"
    assert {b.pseudonym for b in blocks} == expected_blocks(container, opened(container, after))
    # Only the birth date did not change: it is not written again.
    assert not any("person_birth_date" in s for s in changed)


async def test_demographics_sealed_under_an_older_key_are_sealed_again(
    container: Container,
) -> None:
    """A row the active key did not seal (a key rotation under way) is not kept as is."""
    await index(container, f.lab_bundle(pat=patient("13800138000")))
    async with container.sessions() as s, s.begin():
        await s.execute(update(person_demographics).values(key_id="k-retired"))
    written = await _written(container, f.lab_bundle(accession="ACC-2", pat=patient("13800138000")))
    assert any("person_demographics" in s for s in written)
    (row,), _ = await stored(container)
    assert row.key_id == container.cipher.active_key_id
    assert opened(container, row).phone == "13800138000"
