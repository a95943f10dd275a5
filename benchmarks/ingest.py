"""`make bench`: ingest throughput and check latency, each against a baseline of this run.

Absolute numbers depend on the machine; the ratios say where mrb's own work goes:
- indexing vs. a baseline that only decodes JSON and stores the bytes (the floor of any
  ingest), both on the same SQLite file system;
- Kafka path (publish -> worker -> receipt) vs. a bare Kafka round trip on the same Tansu;
- recognition-check latency vs. /healthz latency on the same HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.common.envelope import OutgoingMessage
from adapters.common.publisher import Publisher, ReceiptWatcher
from adapters.common.receipts import RECEIPT_KEYS_FILE, ReceiptTrust
from adapters.common.signing import public_key_b64
from broker.bootstrap import Container
from broker.demo.dataset import NATIONAL_ID_SYSTEM, DemoDataset, DemoMessage, generate
from broker.domain.actors import Role
from broker.ingest.service import InboundMessage
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.database import upgrade
from broker.storage.tables import payload

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _settings(root: Path, **extra: object) -> Settings:
    return Settings(data_dir=root, consumer_session_timeout_ms=2000, **extra)  # type: ignore[arg-type]


# One signing key per demo hospital: the measured path includes signature checks.
SIGNERS = {h: Ed25519PrivateKey.generate() for h in ("H001", "H002", "H003", "H004")}


async def _register(c: Container, dataset_hospitals: list[tuple[str, str, str, str]]) -> None:
    async with c.sessions() as s, s.begin():
        known = await hospitals.signing_keys(s)
        for hid, name, region, level in dataset_hospitals:
            await hospitals.add(s, hospitals.Hospital(hid, name, region, level), replace=True)
            if (hid, "bench") not in known:
                await hospitals.add_key(s, hid, "bench", public_key_b64(SIGNERS[hid]))


def _outgoing(m: DemoMessage) -> OutgoingMessage:
    out = OutgoingMessage(m.hospital, m.value, m.key, m.message_id, m.content_type)
    return out.signed("bench", SIGNERS[m.hospital]) if m.hospital in SIGNERS else out


async def bench_indexing(patients: int) -> tuple[float, float, int]:
    """Messages/s: full ingest vs. decode-and-store-bytes baseline."""
    ds = generate(now=datetime.now(SHANGHAI), patients=patients)
    hosp = [(h.id, h.name, h.region, h.level) for h in ds.hospitals]
    msgs = [InboundMessage(m.value, dict(_outgoing(m).headers())) for m in ds.messages]
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp))
        await upgrade(settings.resolved_database_url)
        c = Container.build(settings)
        await _register(c, hosp)
        started = time.perf_counter()
        async with c.sessions() as s, s.begin():
            for m in msgs:
                with contextlib.suppress(ValueError, RecursionError):  # bad messages fail here too
                    json.loads(m.value)
                sealed = c.cipher.seal(m.value, associated=b"bench")
                await s.execute(
                    payload.insert(),
                    {
                        "message_id": str(uuid.uuid4()),
                        "hospital_id": "H001",
                        "sha256": "-",
                        "size": len(m.value),
                        "key_id": sealed.key_id,
                        "algorithm": sealed.algorithm,
                        "nonce": sealed.nonce,
                        "ciphertext": sealed.ciphertext,
                        "received_at": datetime.now(SHANGHAI),
                    },
                )
        baseline = len(msgs) / (time.perf_counter() - started)
        service = c.ingest_service()
        started = time.perf_counter()
        for i in range(0, len(msgs), 500):
            await service.process_batch(msgs[i : i + 500])
        full = len(msgs) / (time.perf_counter() - started)
        await c.close()
    return full, baseline, len(msgs)


async def bench_kafka_path(patients: int) -> tuple[float, float]:
    """Messages/s through publish -> worker -> receipt vs. a bare produce -> consume."""
    ds = generate(now=datetime.now(SHANGHAI), patients=patients)
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), http_port=18765, embedded_kafka_port=19765)
        async with running_stack(settings, api=False, worker=True, kafka_needed=True) as stack:
            await _register(
                stack.container, [(h.id, h.name, h.region, h.level) for h in ds.hospitals]
            )
            baseline = await _bare_round_trip(
                stack.container.kafka_bootstrap or "", [m.value for m in ds.messages]
            )
            started = time.perf_counter()
            got = await _index_through_kafka(stack, ds)
            full = got / (time.perf_counter() - started)
    return full, baseline


async def _index_through_kafka(stack: Stack, ds: DemoDataset) -> int:
    """Publish the sample signed and wait for every receipt (hospitals registered first)."""
    bootstrap = stack.container.kafka_bootstrap or ""
    out = [_outgoing(m) for m in ds.messages]
    trust = ReceiptTrust.configured(file=stack.container.settings.keys_dir / RECEIPT_KEYS_FILE)
    async with ReceiptWatcher(bootstrap, trust=trust) as watcher, Publisher(bootstrap) as pub:
        await pub.publish(out)
        return len(await watcher.wait_for({m.message_id: m.hospital for m in out}, timeout=600))


async def _bare_round_trip(bootstrap: str, values: list[bytes]) -> float:
    topic = "bench.echo"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=32 << 20)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_bytes=32 << 20,
        max_partition_fetch_bytes=32 << 20,
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        while not await consumer.getmany(timeout_ms=500):
            pass
        started = time.perf_counter()
        for v in values:
            await producer.send(topic, v)
        await producer.flush()
        seen = 0
        while seen < len(values):
            seen += sum(len(b) for b in (await consumer.getmany(timeout_ms=500)).values())
        return len(values) / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def bench_check_latency(requests: int) -> tuple[list[float], list[float]]:
    """Seconds per check vs. per /healthz, sequential, on an indexed sample."""
    ds = generate(now=datetime.now(SHANGHAI), patients=60)
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(Path(tmp), http_port=18766, embedded_kafka_port=19766)
        async with running_stack(settings, api=True, worker=True, kafka_needed=True) as stack:
            await _register(
                stack.container, [(h.id, h.name, h.region, h.level) for h in ds.hospitals]
            )
            await _index_through_kafka(stack, ds)
            checks: list[float] = []
            health: list[float] = []
            tokens: dict[str, str] = {}
            async with httpx.AsyncClient(base_url=stack.api_url) as client:
                for i in range(requests):
                    p = ds.patients[i % len(ds.patients)]
                    body = {
                        "patient": {"system": NATIONAL_ID_SYSTEM, "value": p.national_id},
                        "ordering_hospital": p.hospitals[0],
                        "order_time": datetime.now(SHANGHAI).isoformat(),
                        "items": [
                            {"system": "http://loinc.org", "code": "718-7"},
                            {"system": "http://loinc.org", "code": "2345-7"},
                        ],
                    }
                    hospital = p.hospitals[0]
                    if hospital not in tokens:  # one doctor's token per hospital, reused
                        issued = await stack.container.issue_token(
                            "bench", Role.DOCTOR, hospital, by="bench"
                        )
                        tokens[hospital] = issued.token
                    token = tokens[hospital]
                    t = time.perf_counter()
                    r = await client.post(
                        "/api/v1/recognition/check",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    checks.append(time.perf_counter() - t)
                    r.raise_for_status()
                    t = time.perf_counter()
                    (await client.get("/healthz")).raise_for_status()
                    health.append(time.perf_counter() - t)
    return checks, health


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def main() -> None:
    patients = int(sys.argv[1]) if len(sys.argv) > 1 else 240
    full, base, n = await bench_indexing(patients)
    print(
        f"indexing      {n} messages: {full:8.0f} msg/s; baseline (decode + store bytes) "
        f"{base:8.0f} msg/s; ratio {full / base:.3f}"
    )
    kfull, kbase = await bench_kafka_path(patients)
    print(
        f"kafka path    publish->receipt {kfull:8.0f} msg/s; baseline (bare round trip) "
        f"{kbase:8.0f} msg/s; ratio {kfull / kbase:.3f}"
    )
    checks, health = await bench_check_latency(200)
    for q in (50, 95):
        c, h = _pct(checks, q) * 1000, _pct(health, q) * 1000
        print(f"check latency p{q}: {c:6.2f} ms; baseline /healthz {h:6.2f} ms; ratio {c / h:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
