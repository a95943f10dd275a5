"""Every file of ../shared/realdata/fhir through ingest: indexed, or a precise DLQ code.

Patients go first, as an ADT feed would: many spec examples reference `Patient/<id>`
that lives in its own file, and a hospital's earlier Patient identifies later results.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from broker.bootstrap import Container
from broker.ingest.service import Outcome
from broker.storage.tables import result
from tests import factories as f

# file -> (outcome, DLQ code or number of results indexed)
EXPECTED: dict[str, tuple[str, str | int]] = {
    "r4-spec/Patient-dicom.json": ("indexed", 0),
    "r4-spec/Patient-example.json": ("indexed", 0),
    "r4-spec/Patient-f001.json": ("indexed", 0),
    "r4-spec/Patient-f201.json": ("indexed", 0),
    "r4-spec/Patient-pat1.json": ("indexed", 0),
    "r4-spec/Patient-pat2.json": ("indexed", 0),
    "r4-spec/Patient-animal.json": ("rejected", "NON_HUMAN_PATIENT"),
    "r4-spec/Bundle-101.json": ("indexed", 1),
    "r4-spec/Bundle-f001.json": ("indexed", 1),
    "r4-spec/Bundle-ghp.json": ("indexed", 1),
    "r4-spec/Bundle-lipids.json": ("indexed", 1),
    "r4-spec/Bundle-lri-example.json": ("indexed", 1),
    "r4-spec/Bundle-micro.json": ("indexed", 1),
    # Patient/genetics-example1 is not in the corpus, so nothing identifies it.
    "r4-spec/Bundle-report.json": ("rejected", "PATIENT_NOT_IDENTIFIED"),
    # Observations point at urn:uuid Patients without identifiers.
    "r4-spec/Bundle-bundle-references.json": ("rejected", "PATIENT_NOT_IDENTIFIED"),
    # Patients only (conditional creates): links identifiers, no result.
    "r4-spec/Bundle-bundle-transaction.json": ("indexed", 0),
    "r4-spec/DiagnosticReport-102.json": ("indexed", 1),
    "r4-spec/DiagnosticReport-f201.json": ("indexed", 1),
    "r4-spec/DiagnosticReport-pap.json": ("rejected", "PATIENT_NOT_IDENTIFIED"),
    "r4-spec/DiagnosticReport-ultrasound.json": ("indexed", 1),
    "r4-spec/Endpoint-example-wadors.json": ("rejected", "UNSUPPORTED_RESOURCE_TYPE"),
    "r4-spec/ImagingStudy-example-xr.json": ("indexed", 1),
    "r4-spec/ImagingStudy-example.json": ("indexed", 1),
    "r4-spec/Media-1.2.840.11361907579238403408700.3.1.04.19970327150033.json": (
        "rejected",
        "UNSUPPORTED_RESOURCE_TYPE",
    ),
    "r4-spec/Media-xray.json": ("rejected", "UNSUPPORTED_RESOURCE_TYPE"),
    "r4-spec/Observation-blood-pressure-dar.json": ("indexed", 1),
    "r4-spec/Observation-decimal.json": ("rejected", "PATIENT_NOT_IDENTIFIED"),
    "r4-spec/Observation-example.json": ("indexed", 1),
    "r4-spec/Observation-f001.json": ("indexed", 1),
    "r4-spec/Observation-f002.json": ("indexed", 1),
    "r4-spec/Observation-f004.json": ("indexed", 1),
    "r4-spec/Observation-f005.json": ("indexed", 1),
    "r4-spec/Observation-f204.json": ("indexed", 1),
    "r4-spec/Observation-f205.json": ("indexed", 1),
    "r4-spec/Observation-f206.json": ("indexed", 1),
    # Same identifier as Observation-f001, status cancelled: a withdrawal of it.
    "r4-spec/Observation-unsat.json": ("indexed", 1),
    "r4-spec/Specimen-101.json": ("rejected", "UNSUPPORTED_RESOURCE_TYPE"),
    # Its Provenance is invalid R4, but out-of-scope resources never reject a result.
    "converter-output/LAB-ORU-1-expected.json": ("indexed", 2),
    "converter-output/LRI_2.0-NG_CBC_Typ_Message-expected.json": ("indexed", 1),
    "converter-output/ORU-R01-RMGEAD-expected.json": ("indexed", 1),
    # BOM-prefixed batch-response: a query answer, not results to index.
    "converter-output/ObservationBundle.json": ("rejected", "UNSUPPORTED_BUNDLE_TYPE"),
    "other-version/imagingstudy-example-stu3.json": ("rejected", "UNSUPPORTED_FHIR_VERSION"),
    "other-version/synthea-stu3.bundle.json": ("rejected", "UNSUPPORTED_FHIR_VERSION"),
}


def test_the_table_covers_every_file(realdata: Path) -> None:
    files = {str(p.relative_to(realdata / "fhir")) for p in (realdata / "fhir").rglob("*.json")}
    assert files == set(EXPECTED)


@pytest.mark.slow
async def test_every_realdata_fhir_file_ends_as_expected(
    realdata: Path, container: Container
) -> None:
    names = sorted(EXPECTED, key=lambda n: "/Patient-" not in n)  # the ADT feed first
    messages = [f.inbound((realdata / "fhir" / name).read_bytes()) for name in names]
    processed = await container.ingest_service().process_batch(messages)
    got = {
        name: (p.outcome.value, p.code.value if p.code else p.results)
        for name, p in zip(names, processed, strict=True)
    }
    assert got == EXPECTED
    indexed = [p for p in processed if p.outcome is Outcome.INDEXED]
    assert sum(p.results for p in indexed) == 25
    async with container.sessions() as s:
        rows = {
            f.business_id_of(container, r): r.status
            for r in (await s.execute(select(result))).all()
        }
    # Two pairs of spec examples reuse one identifier: each pair is one result, two versions.
    assert len(rows) == 23
    # Observation-unsat withdraws Observation-f001: same identifier, same `issued`, so the
    # later arrival wins.
    assert rows["Observation|http://www.bmc.nl/zorgportal/identifiers/observations|6323"] == (
        "cancelled"
    )
