"""An independent FHIR client (fhirpy, from PyPI) searching and paging the running service.

The stack is mrb's own (`running_stack`: uvicorn on a free port, real database); the
client knows nothing of mrb and follows the Bundle links the server returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker import runtime
from broker.api.app import create_app
from broker.bootstrap import Container
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from tests import factories as f
from tests.conftest import bearer
from tests.integration.test_fhir_api import index, with_fhir

fhirpy = pytest.importorskip("fhirpy", reason="fhirpy (dev dependency) is not installed")
exceptions = pytest.importorskip("fhirpy.base.exceptions")

A = f"{f.NATIONAL}|{f.PATIENT_A}"
MONTHS = [f"2026-{m:02d}-15T08:30:00+08:00" for m in range(1, 10)]


@pytest.fixture
async def stack(
    settings: Settings, container: Container, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    def app_with_fhir(c: Container, *, role: str = "api") -> Any:
        return with_fhir(create_app(c, role=role))

    monkeypatch.setattr(runtime, "create_app", app_with_fhir)
    await index(
        container,
        *(
            (f.lab_bundle(accession=f"ACC-{i}", effective=eff), "H001" if i % 2 else "H002")
            for i, eff in enumerate(MONTHS)
        ),
        (f.imaging_bundle(), "H002"),
    )
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        yield s


async def client(stack: Stack, container: Container, **headers: str) -> Any:
    token = (await bearer(container, "doctor", "H002", "dr.li"))["Authorization"]
    return fhirpy.AsyncFHIRClient(
        f"{stack.api_url}/fhir", authorization=token, extra_headers=headers or None
    )


async def test_fhirpy_searches_pages_and_reads(stack: Stack, container: Container) -> None:
    fc = await client(stack, container)
    capability = await fc.execute("metadata", method="get")
    assert capability["fhirVersion"] == "4.0.1"

    (patient,) = await fc.resources("Patient").search(identifier=A).fetch()
    pid = patient.id
    assert {i["value"] for i in patient["identifier"]} >= {f.PATIENT_A}

    reports = fc.resources("DiagnosticReport").search(patient=pid)
    assert await reports.count() == 10  # nine panels and one imaging report
    # fetch_all follows the server's `next` links to the end, 3 at a time.
    everything = await reports.limit(3).sort("-date").fetch_all()
    assert len(everything) == 10 and len({r.id for r in everything}) == 10
    dated = [r["effectiveDateTime"] for r in everything if "effectiveDateTime" in r]
    assert dated == sorted(dated, reverse=True) and len(dated) == 9

    hb = fc.resources("Observation").search(patient=pid, code="http://loinc.org|718-7")
    assert await hb.count() == 9
    spring = await hb.search(date__ge="2026-03", date__lt="2026-06").limit(2).fetch_all()
    assert sorted(o["effectiveDateTime"][:7] for o in spring) == ["2026-03", "2026-04", "2026-05"]

    raw = await (
        fc.resources("DiagnosticReport")
        .search(patient=pid, date="2026-07")
        .include("DiagnosticReport", "result")
        .fetch_raw()
    )
    modes = sorted(e["search"]["mode"] for e in raw["entry"])
    assert raw["total"] == 1 and modes == ["include", "include", "match"]

    studies = await fc.resources("ImagingStudy").search(patient=pid, modality="CT").fetch()
    (study,) = studies
    again = await fc.get("ImagingStudy", study.id)
    assert again["id"] == study.id and again["meta"]["source"] == "H002"
    first = everything[0]
    assert (await fc.reference("DiagnosticReport", first.id).to_resource())["id"] == first.id


async def test_fhirpy_sees_refusals_as_fhir_errors(stack: Stack, container: Container) -> None:
    fc = await client(stack, container)
    with pytest.raises(exceptions.ForbiddenError):
        await fc.resources("Observation").search(code="718-7").fetch()
    with pytest.raises(exceptions.ResourceNotFound):
        await fc.get("DiagnosticReport", "no-such-report")
    (patient,) = await fc.resources("Patient").search(identifier=A).fetch()
    strict = await client(stack, container, Prefer="handling=strict")
    with pytest.raises(exceptions.OperationOutcome) as caught:
        await strict.resources("Observation").search(patient=patient.id, foo="bar").fetch()
    assert "handling=strict" in str(caught.value)
    # Lenient by default: the unknown parameter is ignored.
    found = await fc.resources("Observation").search(patient=patient.id, foo="bar").fetch()
    assert found
    anonymous = fhirpy.AsyncFHIRClient(f"{stack.api_url}/fhir")
    with pytest.raises(exceptions.AuthorizationError):
        await anonymous.resources("Patient").search(identifier=A).fetch()
