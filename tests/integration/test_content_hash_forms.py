"""A replay of a version stored before the content hash changed form is still a replay
(broker/domain/versions.py): nothing new is stored, nothing is reported as corrected."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from broker.bootstrap import Container
from broker.ingest.parse import parse_message
from broker.storage.tables import result_version
from tests import factories as f


async def _versions(c: Container) -> list[tuple[str, bool]]:
    async with c.sessions() as s:
        rows = await s.execute(select(result_version.c.content_hash, result_version.c.is_current))
        return sorted((h, bool(current)) for h, current in rows)


async def test_a_replay_of_a_version_stored_under_the_earlier_hash_changes_nothing(
    container: Container,
) -> None:
    c = container
    value = f.lab_bundle(hb=11.2)
    first = await c.ingest_service().process_batch([f.inbound(value)])
    assert [p.outcome.value for p in first] == ["indexed"]
    ((stored, _),) = await _versions(c)
    assert stored.startswith("o")
    # As a deployment upgraded from the earlier form has it: the same content, old hash.
    (extracted,) = parse_message(value, hospital="H001", zone=ZoneInfo("Asia/Shanghai")).results
    assert extracted.content_hash == stored and extracted.legacy_hash is not None
    earlier = extracted.legacy_hash()
    async with c.sessions() as s, s.begin():
        await s.execute(update(result_version).values(content_hash=earlier))

    again = await c.ingest_service().process_batch([f.inbound(value)])
    assert [p.outcome.value for p in again] == ["duplicate"]
    assert await _versions(c) == [(earlier, True)]
    changed = await c.ingest_service().process_batch([f.inbound(f.lab_bundle(hb=11.9))])
    assert [p.outcome.value for p in changed] == ["indexed"]
    assert len(await _versions(c)) == 2
