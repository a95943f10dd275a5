"""The API edge counts a request against its address and its token at once (two round
trips overlapping, not one after the other), and still answers with the address's
refusal first."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.api.limits import RateLimits
from broker.services.rate_limits import Refusal

ADDRESS = Refusal("address", 7, "too many from this address")
TOKEN = Refusal("token", 3, "too many with this token")


class _Limiter:
    """Each hit waits until both have started: sent one after the other, they never end."""

    def __init__(self, address: Refusal | None, token: Refusal | None) -> None:
        self.answers = {"address": address, "token": token}
        self.started: list[str] = []
        self._both = asyncio.Event()

    async def _hit(self, kind: str) -> Refusal | None:
        self.started.append(kind)
        if len(self.started) == 2:
            self._both.set()
        await asyncio.wait_for(self._both.wait(), timeout=2)
        return self.answers[kind]

    async def address(self, _address: str) -> Refusal | None:
        return await self._hit("address")

    async def token(self, _person: str) -> Refusal | None:
        return await self._hit("token")


class _Container:
    def __init__(self, limiter: _Limiter) -> None:
        self._limiter = limiter

    def rate_limiter(self) -> _Limiter:
        return self._limiter


async def _status(limiter: _Limiter) -> tuple[int, dict[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    edge = RateLimits(app, _Container(limiter), lambda _token: "H002/dr.wang")  # type: ignore[arg-type]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/recognition/decline-reasons",
        "client": ("10.0.0.9", 50000),
        "headers": [(b"authorization", b"Bearer t")],
    }
    await edge(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"])


async def test_both_hits_are_sent_at_once() -> None:
    limiter = _Limiter(None, None)
    status, _ = await _status(limiter)
    assert status == 200
    assert sorted(limiter.started) == ["address", "token"]


async def test_the_address_refusal_comes_first_and_the_token_still_counts() -> None:
    limiter = _Limiter(ADDRESS, TOKEN)
    status, headers = await _status(limiter)
    assert status == 429
    assert headers[b"retry-after"] == b"7"
    assert sorted(limiter.started) == ["address", "token"]


async def test_a_token_over_its_limit_is_refused() -> None:
    status, headers = await _status(_Limiter(None, TOKEN))
    assert status == 429
    assert headers[b"retry-after"] == b"3"
