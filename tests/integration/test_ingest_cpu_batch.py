"""A result amended within one batch keeps only its newest items and index rows (the
writer reaches each result's staged rows directly: issue #16)."""

from __future__ import annotations

from sqlalchemy import select

from broker.bootstrap import Container
from broker.storage.fhir_tables import fhir_resource
from broker.storage.tables import result, result_item, result_version
from tests import factories as f


async def test_an_amendment_in_the_same_batch_replaces_the_items(container: Container) -> None:
    batch = [
        f.inbound(f.lab_bundle(accession="A")),
        f.inbound(f.lab_bundle(accession="B")),
        f.inbound(
            f.lab_bundle(
                accession="A",
                status="amended",
                hb=11.0,
                version="2",
                last_updated="2026-05-19T09:00:00+08:00",
            )
        ),
        f.inbound(f.lab_bundle(accession="C")),
    ]
    processed = await container.ingest_service().process_batch(batch)
    assert [p.outcome.value for p in processed] == ["indexed"] * 4
    async with container.sessions() as s:
        ids = {
            f.business_id_of(container, r): r.id for r in (await s.execute(select(result))).all()
        }
        items = (await s.execute(select(result_item.c.result_id, result_item.c.status))).all()
        versions = (
            await s.execute(
                select(result_version.c.result_id, result_version.c.status, result_version.c.id)
                .where(result_version.c.is_current.is_(True))
                .order_by(result_version.c.id)
            )
        ).all()
        indexed = (
            await s.execute(select(fhir_resource.c.result_id, fhir_resource.c.version_id))
        ).all()
    a, b, c = (ids[f"DiagnosticReport|urn:lab:H001|{x}"] for x in "ABC")
    by_result: dict[str, list[str]] = {}
    for rid, status in items:
        by_result.setdefault(rid, []).append(status)
    # The report and its two Observations, once each: the amendment's (the report and the
    # haemoglobin amended), not the original's (all final) as well.
    assert sorted(by_result[a]) == ["amended", "amended", "final"]
    assert len(by_result[b]) == len(by_result[c]) == 3
    current = {rid: (status, vid) for rid, status, vid in versions}
    assert set(current) == {a, b, c}
    assert current[a][0] == "amended"
    assert {vid for rid, vid in indexed if rid == a} == {current[a][1]}
