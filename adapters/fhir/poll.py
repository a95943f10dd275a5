"""Poll a hospital FHIR server for new DiagnosticReports and turn each into a message.

`GET {base}/DiagnosticReport?_lastUpdated=ge{since}&_sort=_lastUpdated
&_include=DiagnosticReport:subject&_include=DiagnosticReport:result&_count=N`, following
`next` links. Each report becomes one collection Bundle (its Patient, the report, its
Observations). The cursor (the newest `meta.lastUpdated` seen) is kept in a file, so a
restart resumes; `ge` plus the broker's de-duplication makes the boundary safe.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

Json = dict[str, Any]


class PollError(RuntimeError):
    """The FHIR server answered something other than a searchset Bundle."""


@dataclass(frozen=True)
class Polled:
    report_id: str
    last_updated: str | None
    value: bytes  # a collection Bundle: Patient, DiagnosticReport, Observations


class Cursor:
    """The newest lastUpdated already fetched, in a small file of the adapter's data dir."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        if not self.path.exists():
            return None
        value = json.loads(self.path.read_text()).get("last_updated")
        return str(value) if value else None

    def write(self, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last_updated": value}))
        tmp.replace(self.path)  # atomic: a crash leaves the old or the new cursor


async def poll_reports(
    client: httpx.AsyncClient, base: str, since: str | None, *, page_size: int = 50
) -> AsyncIterator[Polled]:
    """Every DiagnosticReport updated at or after `since` (all when None), oldest first."""
    params: dict[str, str | list[str]] = {
        "_sort": "_lastUpdated",
        "_include": ["DiagnosticReport:subject", "DiagnosticReport:result"],
        "_count": str(page_size),
    }
    if since:
        params["_lastUpdated"] = f"ge{since}"
    url: str | None = f"{base.rstrip('/')}/DiagnosticReport"
    query: dict[str, str | list[str]] | None = params
    while url:
        response = await client.get(url, params=query, headers={"Accept": "application/fhir+json"})
        response.raise_for_status()
        page = response.json()
        if page.get("resourceType") != "Bundle" or page.get("type") != "searchset":
            raise PollError(f"{url} did not answer a searchset Bundle")
        for item in _reports(page, base.rstrip("/")):
            yield item
        url = next(
            (link["url"] for link in page.get("link", []) if link.get("relation") == "next"), None
        )
        query = None  # the next link carries the whole query


def _reports(page: Json, base: str) -> list[Polled]:
    by_ref: dict[str, Json] = {}
    reports: list[Json] = []
    for entry in page.get("entry", []):
        res = entry.get("resource") or {}
        rtype, rid = res.get("resourceType"), res.get("id")
        if rtype and rid:
            by_ref[f"{rtype}/{rid}"] = res
        if (
            rtype == "DiagnosticReport"
            and (entry.get("search") or {}).get("mode", "match") == "match"
        ):
            reports.append(res)
    out = []
    for report in reports:
        patient = by_ref.get((report.get("subject") or {}).get("reference") or "")
        results = [
            by_ref[ref] for r in report.get("result", []) if (ref := r.get("reference")) in by_ref
        ]
        members = [*([patient] if patient else []), report, *results]
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in members
            ],
        }
        out.append(
            Polled(
                str(report.get("id")),
                (report.get("meta") or {}).get("lastUpdated"),
                json.dumps(bundle, ensure_ascii=False).encode(),
            )
        )
    return out
