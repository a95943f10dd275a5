"""A patient's own access report (PIPL Arts. 44-45): who read their data, when, from
which hospital, for what purpose, which results and which recognitions used them.

For the platform's service that answers patients (their app, a hospital's patient
portal): it holds an `audit` token, the only role that reads the audit trail (三员分立).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from broker.api.deps import ContainerDep, require
from broker.domain.actors import Actor, Duty
from broker.domain.errors import Invalid
from broker.services.access_report import ReportRequest, parse_day, parse_identifier

router = APIRouter(prefix="/api/v1/patients", tags=["patients"])
PatientReportDep = Annotated[Actor, Depends(require(Duty.PATIENT_ACCESS_REPORT))]
FORMATS = ("json", "fhir", "csv")
CSV = "text/csv; charset=utf-8"
FHIR_JSON = "application/fhir+json"


@router.get("/access-report", response_model=None)
async def access_report(
    request: Request,
    container: ContainerDep,
    actor: PatientReportDep,
    identifier: Annotated[str, Query(description="the patient's identifier, system|value")],
    hospital: Annotated[
        str | None, Query(description="the hospital that issued it (hospital-scoped MRNs)")
    ] = None,
    from_: Annotated[
        str | None, Query(alias="from", description="first day, YYYY-MM-DD (Asia/Shanghai)")
    ] = None,
    to: Annotated[str | None, Query(description="day after the last, YYYY-MM-DD")] = None,
    format: Annotated[str, Query(description="json, fhir (Bundle of AuditEvent) or csv")] = "json",
) -> Response | dict[str, Any]:
    """Every audited read of one patient's data over [from, to) (default: the last 12
    months), oldest first. Producing it is audited, and appears in the next report."""
    if format not in FORMATS:
        raise Invalid("Invalid format", f"format must be one of {', '.join(FORMATS)}")
    system, value = parse_identifier(identifier)
    asked = ReportRequest(
        system, value, hospital or None, parse_day(from_, "from"), parse_day(to, "to")
    )
    report = await container.access_reports().report(actor, asked)
    if format == "csv":
        return Response(
            report.as_csv().encode("utf-8"),
            media_type=CSV,
            headers={"Content-Disposition": 'attachment; filename="access-report.csv"'},
        )
    if format == "fhir":
        bundle = report.as_fhir(str(request.base_url).rstrip("/") + "/fhir")
        return Response(json.dumps(bundle, ensure_ascii=False), media_type=FHIR_JSON)
    return report.as_dict()
