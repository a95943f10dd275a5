"""The FHIR poller follows only safe `next` links (adapters/fhir/poll.py): on the
configured server, never a page twice, at most --max-pages per run; the token goes to
the configured server only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from adapters.fhir.poll import PollError, Search

BASE = "https://fhir.h001.example.cn/fhir"
TOKEN = "hospital-source-token"


def searchset(next_url: str | None, report: str) -> dict[str, object]:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    entry = {
        "resource": {
            "resourceType": "DiagnosticReport",
            "id": report,
            "meta": {"lastUpdated": "2026-05-18T10:00:00+08:00"},
        },
        "search": {"mode": "match"},
    }
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": [entry]}


class Server:
    """A FHIR server stand-in: `pages(request) -> next link` decides where each page points."""

    def __init__(self, next_of: Callable[[httpx.Request, int], str | None]) -> None:
        self.next_of = next_of
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        n = len(self.requests)
        return httpx.Response(200, json=searchset(self.next_of(request, n), f"r{n}"))


async def run(server: Server, *, max_pages: int = 1000) -> tuple[Search, list[str], str | None]:
    """Read every page; the search, the reports read and the error, if any."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        search = Search(client, BASE, None, token=TOKEN, max_pages=max_pages)
        reports: list[str] = []
        try:
            async for page in search.pages():
                reports += [p.report_id for p in page]
        except PollError as exc:
            return search, reports, str(exc)
    return search, reports, None


async def test_pages_on_the_same_server_are_followed_with_the_token() -> None:
    server = Server(lambda _r, n: f"{BASE}/DiagnosticReport?_page={n + 1}" if n < 3 else None)
    search, reports, error = await run(server)
    assert error is None and reports == ["r1", "r2", "r3"] and not search.more
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in server.requests)


async def test_a_relative_next_link_is_resolved_on_the_server() -> None:
    server = Server(lambda _r, n: "DiagnosticReport?_page=2" if n == 1 else None)
    _search, reports, error = await run(server)
    assert error is None and reports == ["r1", "r2"]
    assert str(server.requests[1].url) == f"{BASE}/DiagnosticReport?_page=2"


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://attacker.example/fhir/DiagnosticReport?_page=2",  # another host
        "http://fhir.h001.example.cn/fhir/DiagnosticReport?_page=2",  # another scheme
        "https://fhir.h001.example.cn:8443/fhir/DiagnosticReport?_page=2",  # another port
        "https://fhir.h001.example.cn.attacker.example/fhir/DiagnosticReport",
        "//attacker.example/fhir/DiagnosticReport",  # scheme-relative
    ],
)
async def test_a_next_link_to_another_server_stops_the_run(elsewhere: str) -> None:
    server = Server(lambda _r, n: elsewhere if n == 1 else None)
    _search, reports, error = await run(server)
    assert error is not None and "another server" in error and "token was not sent" in error
    assert reports == ["r1"]  # the page read; nothing of the other server
    assert [r.url.host for r in server.requests] == ["fhir.h001.example.cn"]


async def test_a_next_link_to_the_same_origin_with_its_default_port_is_followed() -> None:
    server = Server(
        lambda _r, n: (
            "https://FHIR.h001.example.cn:443/fhir/DiagnosticReport?p=2" if n == 1 else None
        )
    )
    _search, reports, error = await run(server)
    assert error is None and reports == ["r1", "r2"]


async def test_a_page_that_links_to_itself_is_an_error_not_a_loop() -> None:
    server = Server(lambda request, _n: str(request.url))
    _search, reports, error = await run(server)
    assert error is not None and "already read" in error
    assert len(server.requests) == 1 and reports == ["r1"]


async def test_a_longer_cycle_is_found_too() -> None:
    server = Server(lambda _r, n: f"{BASE}/DiagnosticReport?_page={n % 3 + 1}")
    _search, reports, error = await run(server)
    assert error is not None and "already read" in error
    # The search, then pages 2, 3 and 1 (new: the search had other parameters); 2 again
    # is refused.
    assert len(server.requests) == 4 and reports == ["r1", "r2", "r3", "r4"]


async def test_an_endless_server_stops_at_max_pages() -> None:
    server = Server(lambda _r, n: f"{BASE}/DiagnosticReport?_page={n + 1}")
    search, reports, error = await run(server, max_pages=25)
    assert error is None and len(reports) == 25 and len(server.requests) == 25
    assert search.more and search.pages_read == 25


async def test_no_token_is_sent_when_none_is_configured() -> None:
    server = Server(lambda _r, _n: None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as client:
        async for _ in Search(client, BASE, "2026-05-01T00:00:00Z").pages():
            pass
    (request,) = server.requests
    assert "authorization" not in request.headers
    assert request.url.params["_lastUpdated"] == "ge2026-05-01T00:00:00Z"
