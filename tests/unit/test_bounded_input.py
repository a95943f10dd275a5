"""The HTTP middleware on its own: body limit, labels, no-store, request ids."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from broker.api.middleware import AccessLog, BodySizeLimit, NoStore, method_label
from broker.observability import configure_logging

LIMIT = 1000


async def echo_size(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then says how long it was (what a real route does)."""
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The body limit tells the app the client went away; whatever it sends now
            # must never reach the client.
            await send({"type": "http.response.start", "status": 499, "headers": []})
            await send({"type": "http.response.body", "body": b"app saw a disconnect"})
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]


class Chunks:
    """A streamed (chunked) body that counts how much of it was pulled."""

    def __init__(self, chunk: int, count: int) -> None:
        self.chunk, self.count, self.pulled = chunk, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.pulled += 1
            yield b"x" * self.chunk


class TestBodySizeLimit:
    async def test_a_body_at_the_limit_passes(self) -> None:
        async with client(BodySizeLimit(echo_size, LIMIT)) as c:
            r = await c.post("/", content=b"x" * LIMIT)
        assert r.status_code == 200 and r.text == str(LIMIT)

    async def test_one_byte_over_is_413_with_a_problem_body(self) -> None:
        async with client(BodySizeLimit(echo_size, LIMIT)) as c:
            r = await c.post("/", content=b"x" * (LIMIT + 1))
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 413 and "MRB_MAX_BODY_BYTES" in r.json()["detail"]

    async def test_a_declared_length_over_the_limit_is_refused_unread(self) -> None:
        body = Chunks(100, 50)
        async with client(BodySizeLimit(echo_size, LIMIT)) as c:
            r = await c.post("/", content=body, headers={"Content-Length": "5000"})
        assert r.status_code == 413 and body.pulled == 0

    async def test_a_chunked_body_is_cut_off_at_the_limit(self) -> None:
        body = Chunks(100, 10_000)  # 1 MB streamed, no Content-Length
        async with client(BodySizeLimit(echo_size, LIMIT)) as c:
            r = await c.post("/", content=body)
        assert r.status_code == 413 and r.json()["title"] == "Content Too Large"
        assert body.pulled == LIMIT // 100 + 1  # stopped at the first chunk past the limit

    async def test_a_chunked_body_under_the_limit_passes(self) -> None:
        async with client(BodySizeLimit(echo_size, LIMIT)) as c:
            r = await c.post("/", content=Chunks(100, 10))
        assert r.status_code == 200 and r.text == str(LIMIT)


class TestLabels:
    @pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    def test_known_methods_keep_their_name(self, method: str) -> None:
        assert method_label(method) == method

    @pytest.mark.parametrize("method", ["PROPFIND", "get", "X" * 300, "BREW"])
    def test_anything_else_is_other(self, method: str) -> None:
        assert method_label(method) == "OTHER"


async def fixed(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"cache-control", b"max-age=3600"), (b"x-request-id", b"app's own")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


class TestHeaders:
    async def test_no_store_replaces_a_cache_header_the_app_set(self) -> None:
        async with client(NoStore(fixed)) as c:
            r = await c.get("/api/v1/anything")
        assert r.headers.get_list("cache-control") == ["no-store"]
        assert r.headers["pragma"] == "no-cache"

    async def test_static_assets_may_be_cached(self) -> None:
        async with client(NoStore(fixed)) as c:
            r = await c.get("/static/style.css")
        assert r.headers["cache-control"] == "max-age=3600" and "pragma" not in r.headers

    async def test_a_plain_request_id_is_echoed(self) -> None:
        async with client(AccessLog(fixed)) as c:
            r = await c.get("/", headers={"X-Request-ID": "req-42.a:b"})
        assert r.headers.get_list("x-request-id") == ["req-42.a:b"]

    @pytest.mark.parametrize("given", ["", "a b", "x" * 129, "<script>", "ünï"])
    async def test_an_odd_request_id_is_replaced_by_a_new_one(self, given: str) -> None:
        async with client(AccessLog(fixed)) as c:
            r = await c.get("/", headers={"X-Request-ID": given.encode("utf-8")})  # type: ignore[dict-item]
        (rid,) = r.headers.get_list("x-request-id")
        assert rid != given and len(rid) == 32 and int(rid, 16) >= 0


async def test_the_refusal_is_the_only_response_sent() -> None:
    """After the 413 the app's own answer (here a 499) is dropped, not sent as well."""
    sent: list[Message] = []
    chunks = [b"x" * 600, b"x" * 600, b""]

    async def receive() -> Message:
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    await BodySizeLimit(echo_size, LIMIT)(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [413]


async def test_the_access_line_is_one_json_object_with_its_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    loggers = [logging.getLogger(n) for n in ("", "aiokafka", "uvicorn.access", "httpx", "alembic")]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    configure_logging("INFO")  # stderr is captured, not a terminal: JSON lines
    try:
        async with client(AccessLog(fixed)) as c:
            await c.get("/anything?identifier=secret", headers={"X-Request-ID": "r-1"})
    finally:
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines() if '"request"' in x]
    assert line["event"] == "request" and line["logger"] == "broker.access"
    assert line["route"] == "unmatched" and line["method"] == "GET" and line["status"] == 200
    assert line["request_id"] == "r-1" and line["level"] == "info" and "latency_ms" in line
    assert "secret" not in json.dumps(line) and "/anything" not in json.dumps(line)
