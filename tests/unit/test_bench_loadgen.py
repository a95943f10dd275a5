"""The bench's load generator sends the requests its job describes, byte for byte what an
HTTP client given the same JSON would send, and reports every refusal: a faster client
must not measure a different request."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks import loadgen

KEY = ec.generate_private_key(ec.SECP384R1())
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


async def _server(status: int) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        return web.json_response({"ok": True}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", seen


def _job(base: str, *variants: dict[str, Any]) -> dict[str, Any]:
    return {
        "base_url": base,
        "warmup": 1,
        "rounds": 2,
        "per_round": 3,
        "concurrency": 2,
        "variants": list(variants),
    }


async def test_json_bodies_params_and_headers_arrive_as_given() -> None:
    runner, base, seen = await _server(200)
    bodies = [{"patient": {"value": "张三"}, "items": [{"code": "718-7"}]}, {"n": 2}]
    try:
        result = await loadgen.run(
            _job(
                base,
                {
                    "name": "check",
                    "path": "/api/check",
                    "headers": {"Authorization": "Bearer t"},
                    "requests": [{"json": b} for b in bodies],
                },
                {
                    "name": "fhir",
                    "method": "GET",
                    "path": "/fhir/Observation",
                    "headers": {"Authorization": "Bearer t"},
                    "requests": [{"params": {"subject:identifier": "sys|1"}}],
                },
            )
        )
    finally:
        await runner.cleanup()

    assert result["failures"] == []
    for name in ("check", "fhir"):
        assert [len(r) for r in result["variants"][name]["rounds"]] == [3, 3]
        assert len(result["variants"][name]["wall"]) == 2
    posts = [s for s in seen if s["method"] == "POST"]
    gets = [s for s in seen if s["method"] == "GET"]
    assert len(posts) == len(gets) == 1 + 2 * 3  # the warm-up, then two rounds
    assert {s["path"] for s in posts} == {"/api/check"}
    assert all(s["headers"]["Content-Type"] == "application/json" for s in posts)
    assert all(s["headers"]["Authorization"] == "Bearer t" for s in seen)
    assert [json.loads(s["body"]) for s in posts[:2]] == bodies
    assert {s["path"] for s in gets} == {"/fhir/Observation"}
    assert all(s["query"] == {"subject:identifier": "sys|1"} for s in gets)
    assert all(s["body"] == b"" for s in gets)


async def test_a_cds_call_is_signed_afresh_each_time() -> None:
    runner, base, seen = await _server(200)
    aud = f"{base}/cds-services/x"
    try:
        await loadgen.run(
            _job(
                base,
                {
                    "name": "cds",
                    "path": "/cds-services/x",
                    "requests": [{"json": {"hook": "order-select", "context": {"a": 1}}}],
                    "cds": {
                        "iss": "https://ehr/",
                        "aud": aud,
                        "tenant": "H001",
                        "kid": "k1",
                        "alg": "ES384",
                        "key_pem": PEM,
                    },
                },
            )
        )
    finally:
        await runner.cleanup()

    tokens = [s["headers"]["Authorization"].removeprefix("Bearer ") for s in seen]
    claims = [jwt.decode(t, KEY.public_key(), algorithms=["ES384"], audience=aud) for t in tokens]
    assert len({c["jti"] for c in claims}) == len(seen) == 7
    assert {c["tenant"] for c in claims} == {"H001"}
    bodies = [json.loads(s["body"]) for s in seen]
    assert len({b["hookInstance"] for b in bodies}) == len(seen)
    assert all(b["hook"] == "order-select" and b["context"] == {"a": 1} for b in bodies)


@pytest.mark.parametrize("status", [401, 500])
async def test_a_refused_request_is_reported(status: int) -> None:
    runner, base, _ = await _server(status)
    try:
        result = await loadgen.run(
            _job(base, {"name": "check", "path": "/api/check", "requests": [{"json": {}}]})
        )
    finally:
        await runner.cleanup()
    assert result["failures"]
    assert result["failures"][0].startswith(f"check: {status} ")
    assert len(result["failures"]) <= 5
