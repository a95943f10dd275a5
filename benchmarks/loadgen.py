"""The load generator, in its own process: `python -m benchmarks.loadgen JOB OUT`.

JOB (JSON) names the variants to compare (a measured request and its baseline), their
requests, the concurrency and the rounds. Each round runs every variant in turn, so a
drift of the machine hits both alike; a warm-up of each variant runs first and is not
kept. OUT receives each round's latencies (seconds) and wall time per variant, and the
CPU this process used, so the report can say what the client itself cost.

The client is aiohttp, with each JSON body encoded once: a request's latency is timed in
the client, so the client's own work counts in it. Measured against the same API, httpx
spent ~1.1 ms of CPU a request and aiohttp ~0.3 ms (docs/performance.md, seventh round).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson


class _Variant:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.method: str = spec.get("method", "POST")
        self.path: str = spec["path"]
        self.headers: dict[str, str] = spec.get("headers", {})
        if self.method == "POST":
            self.headers = {**self.headers, "Content-Type": "application/json"}
        # {"json"} or {"params"}; a JSON body encoded once, not on every send.
        self.requests = [_encoded(r) for r in spec["requests"]]
        self.cds: dict[str, Any] | None = spec.get("cds")  # sign a fresh JWT per call
        self.warmup: int | None = spec.get("warmup")  # instead of the job's
        self._next = itertools.cycle(self.requests)

    def build(self) -> dict[str, Any]:
        req = dict(next(self._next))
        headers = dict(self.headers)
        if self.cds is not None:
            now = int(time.time())
            token = jwt.encode(
                {
                    "iss": self.cds["iss"],
                    "aud": self.cds["aud"],
                    "exp": now + 300,
                    "iat": now,
                    "jti": str(uuid.uuid4()),
                    "tenant": self.cds["tenant"],
                },
                self.cds["key_pem"],
                algorithm=self.cds["alg"],
                headers={"kid": self.cds["kid"], "typ": "JWT"},
            )
            headers["Authorization"] = f"Bearer {token}"
            body = {**orjson.loads(req["data"]), "hookInstance": str(uuid.uuid4())}
            req["data"] = orjson.dumps(body)
        return {"method": self.method, "url": self.path, "headers": headers, **req}


def _encoded(request: dict[str, Any]) -> dict[str, Any]:
    if "json" not in request:
        return request
    rest = {k: v for k, v in request.items() if k != "json"}
    return {**rest, "data": orjson.dumps(request["json"])}


async def _batch(
    client: aiohttp.ClientSession, v: _Variant, count: int, concurrency: int, failures: list[str]
) -> tuple[list[float], float]:
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            req = v.build()
            t = time.perf_counter()
            async with client.request(**req) as r:
                body = await r.read()
            latencies.append(time.perf_counter() - t)
            if r.status != 200 and len(failures) < 5:
                failures.append(f"{v.name}: {r.status} {body[:300]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def run(job: dict[str, Any]) -> dict[str, Any]:
    variants = [_Variant(s) for s in job["variants"]]
    concurrency = int(job["concurrency"])
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    failures: list[str] = []
    out: dict[str, Any] = {v.name: {"rounds": [], "wall": []} for v in variants}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with aiohttp.ClientSession(
        base_url=job["base_url"], connector=connector, timeout=timeout
    ) as client:
        for v in variants:
            warmup = v.warmup if v.warmup is not None else int(job["warmup"])
            await _batch(client, v, warmup, concurrency, failures)
        for _ in range(int(job["rounds"])):
            for v in variants:
                lat, wall = await _batch(client, v, int(job["per_round"]), concurrency, failures)
                out[v.name]["rounds"].append(lat)
                out[v.name]["wall"].append(wall)
    return {
        "variants": out,
        "failures": failures,
        "cpu_seconds": time.process_time() - cpu0,
        "wall_seconds": time.perf_counter() - wall0,
    }


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(asyncio.run(run(job))))


if __name__ == "__main__":
    main()
