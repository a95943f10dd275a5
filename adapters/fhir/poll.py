"""Poll a hospital FHIR server for new DiagnosticReports and turn each into a message.

`GET {base}/DiagnosticReport?_lastUpdated=ge{since}&_sort=_lastUpdated
&_include=DiagnosticReport:subject&_include=DiagnosticReport:result&_count=N`, following
`next` links. Each report becomes one collection Bundle (its Patient, the report, its
Observations). The cursor (the newest `meta.lastUpdated` seen) is kept in a file, so a
restart resumes; `ge` plus the broker's de-duplication makes the boundary safe.

A `next` link is a URL the server chose, so it is followed only when it stays on the
configured server (same scheme, host and port as the base; the bearer token goes with
no other request), has not been read already in this run (a server whose links loop is
an error, not an endless run), and only up to `max_pages` pages per run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

Json = dict[str, Any]
DEFAULT_MAX_PAGES = 1000
_DEFAULT_PORTS = {"https": 443, "http": 80}


class PollError(RuntimeError):
    """The FHIR server answered something other than a searchset Bundle, or its paging
    links cannot be followed safely (another server, a loop); the message says which."""


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


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL, with the default port filled in."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise PollError(f"{url[:200]} is not an absolute http(s) URL")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise PollError(f"{url[:200]} has an invalid port") from None
    return scheme, host, port


class Search:
    """One run of the DiagnosticReport search: its pages, in order, as lists of reports.

    After the run, `pages_read` says how many pages were read and `more` whether a `next`
    link was left unread (the page cap, or the caller stopped early).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base: str,
        since: str | None,
        *,
        token: str | None = None,
        page_size: int = 50,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self.client = client
        self.base = base.rstrip("/")
        self.origin = origin(self.base)
        self.since = since
        self.token = token
        self.page_size = page_size
        self.max_pages = max_pages
        self.pages_read = 0
        self.more = False

    async def pages(self) -> AsyncIterator[list[Polled]]:
        params: dict[str, str | list[str]] = {
            "_sort": "_lastUpdated",
            "_include": ["DiagnosticReport:subject", "DiagnosticReport:result"],
            "_count": str(self.page_size),
        }
        if self.since:
            params["_lastUpdated"] = f"ge{self.since}"
        url: str | None = f"{self.base}/DiagnosticReport"
        query: dict[str, str | list[str]] | None = params
        visited: set[str] = set()
        headers = {"Accept": "application/fhir+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        while url:
            if self.pages_read >= self.max_pages:
                self.more = True
                return
            response = await self.client.get(url, params=query, headers=headers)
            visited.add(str(response.request.url))
            response.raise_for_status()
            page = response.json()
            if page.get("resourceType") != "Bundle" or page.get("type") != "searchset":
                raise PollError(f"{url} did not answer a searchset Bundle")
            self.pages_read += 1
            found = _next_link(page)
            self.more = found is not None
            yield _reports(page, self.base)
            current = str(response.request.url)
            url = self._follow(found, current, visited) if found is not None else None
            query = None  # the next link carries the whole query

    def _follow(self, found: object, current: str, visited: set[str]) -> str:
        """The next page's URL, if it is safe to ask for; else PollError."""
        if not isinstance(found, str) or not found.strip():
            raise PollError(f"the page at {current[:200]} has a next link that is not a URL")
        url = urljoin(current, found.strip())
        if origin(url) != self.origin:
            raise PollError(
                f"the server's next link goes to another server ({url[:200]}), not "
                f"{self.base}: not followed, and the token was not sent there. Fix the "
                "server's base URL setting, or poll the server the links name"
            )
        if str(httpx.URL(url)) in visited:
            raise PollError(
                f"the server's next link ({url[:200]}) leads back to a page already read: "
                "its paging loops; stopped instead of reading it again"
            )
        return url


def _next_link(page: Json) -> object | None:
    links = page.get("link")
    return next(
        (
            link.get("url")
            for link in (links if isinstance(links, list) else [])
            if isinstance(link, dict) and link.get("relation") == "next"
        ),
        None,
    )


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
