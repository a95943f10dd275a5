"""Pure ASGI middleware around the API: bounded bodies, no caching, access log, metrics.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that a body can be refused while it
streams, before anything reads it into memory, parses it or checks a token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.problems import problem
from broker.correlation import new_request_id, request_scope, safe_id
from broker.observability import REQUEST_SECONDS

access_logger = logging.getLogger("broker.access")

# Every method the API serves (and OPTIONS/HEAD, which clients send on their own);
# anything else is one metric label, so made-up methods cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ROUTE = "unmatched"
REQUEST_ID_HEADER = "x-request-id"
# Responses that can be cached: the web pages' own script, style and images.
CACHEABLE_PREFIXES = ("/static/",)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_label(scope: Scope) -> str:
    """The matched route's template ("/fhir/{resource_type}/{id}"), never the raw path."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


class BodyTooLarge(Exception):
    """The body grew past the limit after the response had already started."""


class BodySizeLimit:
    """HTTP 413 for a body over `max_bytes`: at once when Content-Length says so, else as
    soon as the streamed (chunked) body passes the limit; the rest is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if started:
                        raise BodyTooLarge(f"request body over {self.max_bytes} bytes")
                    refused = True
                    await self._refuse(scope, receive, send)
                    # The app sees a client that went away: it stops reading, and
                    # whatever it still tries to send is dropped below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "Content Too Large",
            f"the request body is larger than {self.max_bytes} bytes, the limit for this "
            "API (MRB_MAX_BODY_BYTES); send less per request",
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class HeaderSizeLimit:
    """HTTP 431 for a request whose header fields add up to more than `max_bytes`.

    uvicorn (h11) already refuses headers that grow past the limit while they arrive
    (`h11_max_incomplete_event_size`); this catches a header block that came whole in one
    read, so the limit holds however the bytes were sent.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
            if size > self.max_bytes:
                response = problem(
                    431,
                    "Request Header Fields Too Large",
                    f"the request's headers are larger than {self.max_bytes} bytes, the limit "
                    "for this API (MRB_MAX_HEADER_BYTES)",
                )
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyReadTimeout:
    """HTTP 408 for a request body still arriving `seconds` after the request began.

    The deadline is for the whole body, not each read: a client that trickles a byte at
    a time (slowloris) is cut off as surely as one that stops. The app sees a client that
    went away; the connection is closed.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False
        started = False
        timed_out = False

        async def timed_receive() -> Message:
            nonlocal complete, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if complete:  # the body is in: what follows is waiting for a disconnect
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(left, 0)):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    await self._refuse(scope, send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, timed_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        response = problem(
            408,
            "Request Timeout",
            f"the request body did not arrive within {self.seconds:g} seconds "
            "(MRB_BODY_READ_TIMEOUT); send it again at once",
        )
        response.headers["Connection"] = "close"

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)


class NoStore:
    """`Cache-Control: no-store` and `Pragma: no-cache` on every response that can carry
    patient data: everything except the static assets of the web pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CACHEABLE_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() not in (b"cache-control", b"pragma")
                ]
                headers += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


class AccessLog:
    """One structured log line and one latency observation per request.

    The line names the route template, never the path (it may hold identifiers) nor the
    query string; the caller as authentication left it in `request.state.actor`; and a
    correlation id, the caller's `X-Request-ID` or a new one, echoed in the response.
    401 and 403 are logged at warning, 5xx at error, the rest at info.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        # A caller's own request id is kept only when it is short and plain; else a new one.
        given = (_header(scope, REQUEST_ID_HEADER.encode()) or b"").decode("latin-1")
        request_id = safe_id(given) or new_request_id()
        # A dict shared with the app: authentication writes request.state.actor into it.
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v)
                    for k, v in message.get("headers", ())
                    if k.lower() != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        # Bound for the request: its log lines and the audit entries it writes carry it.
        with request_scope(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started_at
                method, route = method_label(scope["method"]), route_label(scope)
                REQUEST_SECONDS.labels(method, route, str(status)).observe(seconds)
                self._log(scope, state, method, route, status, seconds, request_id)

    @staticmethod
    def _log(
        scope: Scope,
        state: dict[str, Any],
        method: str,
        route: str,
        status: int,
        seconds: float,
        request_id: str,
    ) -> None:
        actor = state.get("actor")
        client = scope.get("client")
        if status >= 500:
            level = logging.ERROR
        elif status in (401, 403):
            level = logging.WARNING
        else:
            level = logging.INFO
        access_logger.log(
            level,
            "request",
            extra={
                "route": route,
                "method": method,
                "status": status,
                "subject": getattr(actor, "name", None),
                "hospital": getattr(actor, "hospital", None),
                "role": str(actor.role) if actor is not None else None,
                "client": client[0] if client else None,
                "latency_ms": round(seconds * 1000, 1),
                "request_id": request_id,
            },
        )
