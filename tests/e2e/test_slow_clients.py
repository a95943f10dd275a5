"""Slow clients against a running server, over raw sockets: a body or headers trickled a
byte at a time are cut off (408) when their deadline passes; oversized headers are
refused; a normal request is unaffected."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from broker.runtime import Stack, running_stack
from broker.settings import Settings

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    quick = settings.model_copy(update={"body_read_timeout": 1.0, "http_header_timeout": 1.0})
    async with running_stack(quick, api=True, worker=False, kafka_needed=False) as s:
        yield s


async def trickle(
    stack: Stack, head: bytes, drip: bytes, *, every: float = 0.1, limit: float = 8.0
) -> tuple[bytes, float]:
    """Send `head`, then `drip` a byte at a time until the server answers and closes;
    the answer and the seconds it took."""
    s = stack.container.settings
    reader, writer = await asyncio.open_connection(s.http_host, s.http_port)
    started = time.monotonic()
    writer.write(head)
    await writer.drain()
    received = bytearray()

    async def collect() -> bytes:
        """Everything until the server closes. A byte written after the server closed makes
        its kernel answer with a reset, which can come before the answer is read: keep
        what arrived."""
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received.extend(chunk)
        return bytes(received)

    answer = asyncio.create_task(collect())
    try:
        for byte in drip:
            # Stop writing once the server answers: a client does, and every byte written
            # after the server closed invites that reset.
            if received or answer.done() or time.monotonic() - started > limit:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(every)
        data = await asyncio.wait_for(answer, limit)
    finally:
        writer.close()
    return data, time.monotonic() - started


async def test_a_trickled_body_is_cut_with_408(stack: Stack) -> None:
    head = (
        b"POST /api/v1/recognition/check HTTP/1.1\r\nHost: mrb\r\n"
        b"Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    data, took = await trickle(stack, head, b"{" + b" " * 399)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"MRB_BODY_READ_TIMEOUT" in data and b"application/problem+json" in data
    assert 0.9 < took < 4, took  # at the deadline, not when the body would have ended (40 s)


async def test_trickled_headers_are_cut_with_408(stack: Stack) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: mrb\r\n"
    data, took = await trickle(stack, head, b"X-Slow: " + b"a" * 200)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert 0.9 < took < 4, took


async def test_a_silent_connection_is_closed_at_the_header_deadline(stack: Stack) -> None:
    data, took = await trickle(stack, b"", b"")
    assert data.startswith(b"HTTP/1.1 408 ") and 0.9 < took < 4, (data, took)


async def test_oversized_headers_are_refused(stack: Stack) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: mrb\r\nX-Big: " + b"a" * (32 * 1024)
    growing, _ = await trickle(stack, head, b"")  # still arriving past 16 KiB: cut off
    assert growing.startswith(b"HTTP/1.1 431 "), growing[:200]
    assert b"MRB_MAX_HEADER_BYTES" in growing
    whole, _ = await trickle(stack, head + b"\r\n\r\n", b"")  # all in one read
    assert whole.startswith(b"HTTP/1.1 431 "), whole[:200]
    assert b"MRB_MAX_HEADER_BYTES" in whole


async def test_a_prompt_request_is_answered(stack: Stack) -> None:
    data, took = await trickle(
        stack, b"GET /healthz HTTP/1.1\r\nHost: mrb\r\nConnection: close\r\n\r\n", b""
    )
    assert data.startswith(b"HTTP/1.1 200 ") and took < 1, (data[:200], took)


async def test_the_deadline_restarts_for_each_request_on_a_kept_alive_connection(
    stack: Stack,
) -> None:
    """A prompt first request, then a second one trickled on the same connection: the
    second gets its own deadline (cut at about 1 s, not let through because the
    connection's first request was on time)."""
    first = b"GET /healthz HTTP/1.1\r\nHost: mrb\r\n\r\n"
    data, took = await trickle(
        stack, first + b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 200
    )
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert data.count(b"HTTP/1.1 408 ") == 1, data[-300:]
    assert 0.9 < took < 4, took
