"""Check latency at growing index sizes, CDS Hooks and FHIR search under bounded load.

The index is filled by `mrb bench load` (synthetic people, ~10 results each, one recent
result per person). The API runs in its own process (benchmarks.api_server: the app of
`mrb serve` plus the person-lookup baseline route); the load generator runs in another
(benchmarks.loadgen), which reports the CPU it used. A check asks for one item: for
`hit_percent` % of the people the item of their recent result (RECOGNIZABLE), for the
others an item they never had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from benchmarks.api_server import LOOKUP_PATH
from benchmarks.config import BenchConfig
from benchmarks.databases import Db, free_port
from benchmarks.procs import Child, child, mrb, wait_http
from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.demo import synthetic_index as synth
from broker.domain.actors import Role
from broker.domain.identifiers import RESIDENT_ID_SYSTEM
from broker.storage.bench_load import footprint
from broker.storage.cds_store import SqlCdsClients

SHANGHAI = ZoneInfo("Asia/Shanghai")
LOINC = "http://loinc.org"
BIG = 90_000_000  # the number of the person with many results (outside the numbered range)
CDS_SERVICE = "mrb-recognition-order-select"
CDS_ISSUER = "https://his.bench.example.cn/"
CDS_KEY = ec.generate_private_key(ec.SECP384R1())
CDS_PEM = CDS_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
CHECK_PATH = "/api/v1/recognition/check"


@dataclass(frozen=True)
class Api:
    base: str
    token: str
    proc: Child


def check_body(number: int, cfg: BenchConfig, *, hit: bool) -> dict[str, Any]:
    code = synth.recent_code(number) if hit else synth.missing_code(number, cfg.results_per_person)
    return {
        "patient": {"system": RESIDENT_ID_SYSTEM, "value": synth.national_id(number)},
        "ordering_hospital": synth.ORDERING_HOSPITAL,
        "order_time": datetime.now(SHANGHAI).isoformat(),
        "items": [{"system": LOINC, "code": code}],
    }


def same_recent_code(number: int, people: int) -> int:
    """A loaded person whose recent result has the same code as `number`'s (else 0)."""
    code = synth.recent_code(number)
    return next((n for n in range(people) if synth.recent_code(n) == code), 0)


def sample_bodies(cfg: BenchConfig, people: int, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        check_body(rng.randrange(people), cfg, hit=rng.randrange(100) < cfg.hit_percent)
        for _ in range(count)
    ]


def cds_body(number: int) -> dict[str, Any]:
    nid = synth.national_id(number)
    order = {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": LOINC, "code": synth.recent_code(number)}]},
        "subject": {"reference": f"Patient/bench-{number}"},
    }
    return {
        "hook": "order-select",
        "context": {
            "userId": "PractitionerRole/bench",
            "patientId": f"bench-{number}",
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": order}]},
            "selections": ["ServiceRequest/sr-1"],
        },
        "prefetch": {
            "patient": {
                "resourceType": "Patient",
                "id": f"bench-{number}",
                "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": nid}],
            }
        },
    }


async def load(cfg: BenchConfig, db: Db, start: int, people: int, *, big: bool) -> dict[str, Any]:
    args = ["bench", "load", "--people", str(people - start), "--start", str(start)]
    args += ["--results", str(cfg.results_per_person)]
    if big:
        args += ["--extra", f"{BIG}:{cfg.big_patient_results}"]
    out = await asyncio.to_thread(mrb, args, db.env())
    loaded: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return loaded


async def disk(db: Db) -> tuple[int, int]:
    c = Container.build(db.settings())
    try:
        async with c.sessions() as s:
            found = await footprint(s, db.sqlite_files())
    finally:
        await c.close()
    return found.results, found.bytes


async def prepare_callers(db: Db) -> str:
    """A doctor's token at the ordering hospital, and the bench's EHR as a CDS client."""
    c = Container.build(db.settings())
    try:
        issued = await c.issue_token(
            "bench-doctor", Role.DOCTOR, synth.ORDERING_HOSPITAL, by="bench"
        )
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(CDS_KEY.public_key()))
        async with c.sessions() as s, s.begin():
            await cds_clients.register_client(
                SqlCdsClients(s),
                CDS_ISSUER,
                synth.ORDERING_HOSPITAL,
                jwks={"keys": [jwk | {"kid": "bench-1", "use": "sig"}]},
            )
    finally:
        await c.close()
    return issued.token


async def verify(api: Api, cfg: BenchConfig) -> dict[str, Any]:
    """A loaded person's check is RECOGNIZABLE, a miss is NO_PRIOR_RESULT, and FHIR search
    finds the person's results: the bulk-loaded rows serve the real paths."""
    headers = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.base, headers=headers, timeout=60) as client:
        r = await client.post("/api/v1/recognition/check", json=check_body(0, cfg, hit=True))
        r.raise_for_status()
        decision = r.json()["items"][0]["decision"]
        miss = await client.post("/api/v1/recognition/check", json=check_body(1, cfg, hit=False))
        miss.raise_for_status()
        f = await client.get("/fhir/Observation", params=fhir_params(0))
        f.raise_for_status()
    found = len(f.json().get("entry", []))
    missed = miss.json()["items"][0]["decision"]
    if decision != "RECOGNIZABLE" or missed != "NO_PRIOR_RESULT" or found == 0:
        raise RuntimeError(
            f"loaded rows do not serve the real paths: hit {decision}, miss {missed}, "
            f"{found} FHIR entries"
        )
    return {"hit": decision, "miss": missed, "fhir_entries": found}


def fhir_params(number: int) -> dict[str, str]:
    return {"subject:identifier": f"{RESIDENT_ID_SYSTEM}|{synth.national_id(number)}"}


async def run_job(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run the load generator process on `job`; its output."""
    path = await asyncio.to_thread(_write_job, job, work)
    out = path.with_suffix(".out.json")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.loadgen", str(path), str(out)
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"load generator failed on {path}")
    result: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    if result["failures"]:
        raise RuntimeError(f"requests failed: {result['failures']}")
    return result


def _write_job(job: dict[str, Any], work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=work, suffix=".json", delete=False) as f:
        json.dump(job, f)
    return Path(f.name)


def variant(name: str, path: str, token: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "path": path,
        "headers": {"Authorization": f"Bearer {token}"},
        "requests": requests,
    }


def pct(latencies: list[float], q: int) -> float:
    """The q-th percentile in milliseconds."""
    return statistics.quantiles(latencies, n=100, method="inclusive")[q - 1] * 1000


def per_round(result: dict[str, Any], name: str, q: int) -> list[float]:
    return [pct(lat, q) for lat in result["variants"][name]["rounds"]]


def throughput(result: dict[str, Any], name: str) -> list[float]:
    v = result["variants"][name]
    return [len(lat) / wall for lat, wall in zip(v["rounds"], v["wall"], strict=True)]


@dataclass
class SizeResult:
    """What one index size gave; the figures are made from it by benchmarks.__main__."""

    label: str
    results: int
    disk_bytes: int
    load_seconds: float
    verified: dict[str, Any]
    single: dict[str, Any]
    concurrent: dict[str, Any]
    big: dict[str, Any]
    bounded: dict[str, Any]
    api_rss: list[int]  # the API's largest RSS during each loaded job
    loadgen_cpu: float


@contextlib.asynccontextmanager
async def running_api(
    db: Db, work: Path, argv: list[str] | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[Api]:
    """The bench's API process (or `argv`, e.g. `mrb serve --workers 2`), ready."""
    port = free_port()
    environ = db.env(
        MRB_HTTP_PORT=str(port), MRB_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}/", **(env or {})
    )
    base = f"http://127.0.0.1:{port}"
    argv = argv or [sys.executable, "-m", "benchmarks.api_server"]
    async with child(argv, environ, work / f"api-{port}.log") as proc:
        await wait_http(f"{base}/healthz", proc)
        yield Api(base, "", proc)


async def sampled(api: Api, job: dict[str, Any], work: Path) -> tuple[dict[str, Any], int]:
    """Run a job while sampling the API's RSS; the job's result and the largest RSS."""
    stop = asyncio.Event()
    api.proc.rss_samples.clear()
    sampler = asyncio.create_task(api.proc.sample_rss(stop))
    try:
        result = await run_job(job, work)
    finally:
        stop.set()
        await sampler
    return result, max(api.proc.rss_samples, default=0)


async def measure_size(
    cfg: BenchConfig,
    db: Db,
    label: str,
    people: int,
    token: str,
    work: Path,
    loaded: dict[str, Any],
) -> SizeResult:
    results, disk_bytes = await disk(db)
    async with running_api(db, work) as bare:
        api = Api(bare.base, token, bare.proc)
        verified = await verify(api, cfg)
        bodies = sample_bodies(cfg, people, cfg.requests, seed=people)
        base = {"base_url": api.base, "warmup": cfg.warmup, "rounds": cfg.rounds}

        def job(
            concurrency: int, *variants: dict[str, Any], per_round: int = cfg.requests
        ) -> dict[str, Any]:
            return {
                **base,
                "concurrency": concurrency,
                "per_round": per_round,
                "variants": list(variants),
            }

        lookup = variant("lookup", LOOKUP_PATH, token, [{"json": b} for b in bodies])
        check = variant("check", CHECK_PATH, token, [{"json": b} for b in bodies])
        single, rss1 = await sampled(api, job(1, lookup, check), work)
        concurrent, rss2 = await sampled(api, job(cfg.concurrency, lookup, check), work)
        # The 10-results patient asks for the same item as the 500-results one (its rules,
        # age bands included, cost the same): only the number of results differs.
        twin = same_recent_code(BIG, people)
        small = variant("small", CHECK_PATH, token, [{"json": check_body(twin, cfg, hit=True)}])
        many = variant("big", CHECK_PATH, token, [{"json": check_body(BIG, cfg, hit=True)}])
        big = await run_job(job(1, small, many, per_round=max(10, cfg.requests // 4)), work)
        numbers = [n for n in range(min(people, 1000)) if n % 10 < 3] or [0]
        cds = {
            "name": "cds",
            "path": f"/cds-services/{CDS_SERVICE}",
            "requests": [{"json": cds_body(n)} for n in numbers],
            "cds": {
                "iss": CDS_ISSUER,
                "aud": f"{api.base}/cds-services/{CDS_SERVICE}",
                "tenant": synth.ORDERING_HOSPITAL,
                "kid": "bench-1",
                "alg": "ES384",
                "key_pem": CDS_PEM,
            },
        }
        fhir = variant(
            "fhir", "/fhir/Observation", token, [{"params": fhir_params(n)} for n in numbers]
        )
        fhir["method"] = "GET"
        # Ingest writes a result's search index rows; the bulk load leaves them to the
        # first read, which builds them: the warm-up reads every person searched once.
        fhir["warmup"] = len(numbers)
        bounded, rss3 = await sampled(api, job(cfg.bounded, lookup, cds, fhir), work)
    return SizeResult(
        label,
        results,
        disk_bytes,
        float(loaded.get("seconds", 0.0)),
        verified,
        single,
        concurrent,
        big,
        bounded,
        [rss1, rss2, rss3],
        sum(r["cpu_seconds"] for r in (single, concurrent, big, bounded)),
    )


# The product's rate limits, on as in production (every request takes a hit on its token
# and address, every check counts its patient), set so high that the load is never refused.
LIMITS_ON = {
    "MRB_RATE_LIMIT_PER_MINUTE": "1000000000",
    "MRB_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000000",
    "MRB_DISTINCT_PATIENTS_PER_HOUR": "1000000000",
}


async def with_limits(
    cfg: BenchConfig, db: Db, people: int, token: str, work: Path
) -> dict[str, Any]:
    """Single-client check and person lookup against an API with the rate limits on."""
    async with running_api(db, work, env=LIMITS_ON) as api:
        bodies = sample_bodies(cfg, people, cfg.requests, seed=people + 2)
        lookup = variant("lookup", LOOKUP_PATH, token, [{"json": b} for b in bodies])
        check = variant("check", CHECK_PATH, token, [{"json": b} for b in bodies])
        return await run_job(plain_job(cfg, api.base, 1, lookup, check), work)


def plain_job(
    cfg: BenchConfig, base: str, concurrency: int, *variants: dict[str, Any]
) -> dict[str, Any]:
    """A load generator job of `cfg`'s warm-up, rounds and requests a round."""
    return {
        "base_url": base,
        "warmup": cfg.warmup,
        "rounds": cfg.rounds,
        "concurrency": concurrency,
        "per_round": cfg.requests,
        "variants": list(variants),
    }


def throughput_job(cfg: BenchConfig, base: str, token: str, people: int) -> dict[str, Any]:
    """Checks only (the product's server has no baseline route), at full concurrency."""
    bodies = sample_bodies(cfg, people, cfg.requests, seed=people + 1)
    check = variant("check", CHECK_PATH, token, [{"json": b} for b in bodies])
    return plain_job(cfg, base, cfg.concurrency, check)
