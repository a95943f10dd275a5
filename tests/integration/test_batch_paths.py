"""The bulk path and the message-by-message path index a batch identically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.bootstrap import Container
from broker.ingest.service import InboundMessage, Processed
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.database import upgrade
from broker.storage.tables import person, result, result_item, result_version
from tests import factories as f
from tests.conftest import seed_hospitals


def scenario() -> list[InboundMessage]:
    """Versions out of order, replays, withdrawals, linking, merges, bad input, two sites."""
    amended = f.lab_bundle(
        status="amended", hb=11.0, version="2", last_updated="2026-05-19T09:00:00+08:00"
    )
    cancelled = f.lab_bundle(
        accession="W", status="cancelled", version="2", last_updated="2026-05-21T09:00:00+08:00"
    )
    same = f.inbound(f.imaging_bundle())
    refused = f.inbound(
        json.dumps(f.observation("o", "718-7", 1.0, subject={"reference": "Patient/zz"})).encode()
    )
    return [
        f.inbound(amended),
        f.inbound(f.lab_bundle()),  # the original arrives after its amendment
        f.inbound(f.lab_bundle()),  # same content, new id: a duplicate version
        f.inbound(f.lab_bundle(accession="W")),
        f.inbound(cancelled),
        same,
        same,  # the same message twice in one batch
        f.inbound(f.lab_bundle(accession="M", pat=f.patient(national_id=None, mrn="MRN-1"))),
        f.inbound(f.lab_bundle(accession="H2", pat=f.patient(mrn="X-9", pid="q")), "H002"),
        refused,
        refused,  # a copy of a rejected message is rejected too, not a "duplicate"
        f.inbound(json.dumps(f.patient(national_id=None, mrn="MRN-7", pid="p7")).encode()),
        f.inbound(
            json.dumps(
                f.observation("o7", "2345-7", 5.0, subject={"reference": "Patient/p7"})
            ).encode()
        ),
        f.inbound(b"{broken"),
        # Two people, then one message proving they are the same: merged in the batch.
        f.inbound(f.lab_bundle(accession="P1", pat=f.patient(f.PATIENT_B, mrn=None, pid="b1"))),
        f.inbound(f.lab_bundle(accession="P2", pat=f.patient(None, mrn="MRN-B", pid="b2"))),
        f.inbound(f.lab_bundle(accession="P3", pat=f.patient(f.PATIENT_B, mrn="MRN-B", pid="b3"))),
    ]


async def snapshot(c: Container) -> dict[str, object]:
    async with c.sessions() as s:
        results = {
            f.business_id_of(c, r): (r.hospital_id, r.status, r.person_id)
            for r in (await s.execute(select(result))).all()
        }
        versions = sorted(
            (r.content_hash, r.is_current, r.status)
            for r in (await s.execute(select(result_version))).all()
        )
        items = sorted(
            (r.code or "", r.status) for r in (await s.execute(select(result_item))).all()
        )
        people = (await s.execute(select(person))).all()
    # Person ids differ between databases: compare who is grouped with whom.
    groups: dict[str, list[str]] = {}
    for business_id, (_, _, pid) in results.items():
        groups.setdefault(pid, []).append(business_id)
    return {
        "results": {b: v[:2] for b, v in results.items()},
        "versions": versions,
        "items": items,
        "groups": sorted(sorted(g) for g in groups.values()),
        "people": len(people),
    }


def outcomes(processed: list[Processed]) -> list[tuple[str, str | None, int]]:
    return [(p.outcome.value, p.code.value if p.code else None, p.results) for p in processed]


async def test_bulk_and_one_by_one_agree(
    container: Container, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="broker.ingest.service")
    bulk = await container.ingest_service().process_batch(scenario())
    assert "message by message" not in caplog.text  # the bulk path did it all
    other_settings = Settings(data_dir=tmp_path / "other", create_keys=True)
    await upgrade(other_settings.resolved_database_url)
    other = Container.build(other_settings)
    try:
        await seed_hospitals(
            other,
            hospitals.Hospital("H001", "H001", "510502", "3"),
            hospitals.Hospital("H002", "H002", "510521", "2"),
        )
        slow = await other.ingest_service()._process_one_by_one(scenario())
        assert outcomes(bulk) == outcomes(slow)
        assert await snapshot(container) == await snapshot(other)
    finally:
        await other.close()
    assert [o[1] for o in outcomes(bulk) if o[0] == "rejected"] == [
        "PATIENT_NOT_IDENTIFIED",
        "PATIENT_NOT_IDENTIFIED",
        "MALFORMED_JSON",
    ]


async def test_a_merge_moves_earlier_results_to_the_surviving_person(
    container: Container,
) -> None:
    await container.ingest_service().process_batch(scenario())
    groups = (await snapshot(container))["groups"]
    assert [
        "DiagnosticReport|urn:lab:H001|P1",
        "DiagnosticReport|urn:lab:H001|P2",
        "DiagnosticReport|urn:lab:H001|P3",
    ] in groups  # type: ignore[operator]
