"""Ingest per worker CPU-second, against full fhir.resources validation of the same messages.

The reference: `Bundle.model_validate(json.loads(value))` (fhir.resources, R4B models, as
ingest uses them) of each message in this process, timed by this process's CPU clock,
just before and just after each round (averaged); it is the least any validating ingest
must do. The measured path: a real `mrb worker` child
process consuming from Tansu (the embedded broker, started here per database), writing
to the database and sending signed receipts; the demo dataset is published signed, and a
round ends when every message has its receipt. The worker's CPU time over the round
(from /proc) divides the message count. With `--processes N`, throughput is also set
against wall time: N processes on N cores should beat N references.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B import get_fhir_model_class

from adapters.common.envelope import OutgoingMessage
from adapters.common.publisher import Publisher, ReceiptWatcher
from adapters.common.receipts import RECEIPT_KEYS_FILE, ReceiptTrust
from adapters.common.signing import public_key_b64
from benchmarks.databases import Db, free_port
from benchmarks.procs import MRB, Child, child, wait_http
from broker.bootstrap import Container
from broker.demo.dataset import DemoMessage, demo_hospitals, generate
from broker.kafka.embedded import EmbeddedKafka
from broker.kafka.topics import default_partitions, ensure_topics
from broker.storage import hospitals

SHANGHAI = ZoneInfo("Asia/Shanghai")
SIGNERS = {h.id: Ed25519PrivateKey.generate() for h in demo_hospitals()}
KEY_ID = "bench"


def dataset(patients: int, seed: int) -> list[DemoMessage]:
    """The demo sample (it needs 20 patients at least: its story has that many cases)."""
    patients = max(20, patients)
    return list(generate(now=datetime.now(SHANGHAI), seed=seed, patients=patients).messages)


def reference_rate(values: list[bytes]) -> float:
    """Messages per CPU-second of full validation alone (invalid ones count: they are
    validated too, and rejected)."""
    bundle = get_fhir_model_class("Bundle")
    started = time.process_time()
    for v in values:
        with contextlib.suppress(Exception):
            bundle.model_validate(json.loads(v))
    return len(values) / (time.process_time() - started)


@dataclass
class WorkerRounds:
    per_cpu_second: list[float] = field(default_factory=list)
    per_wall_second: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    messages: int = 0
    rss_max: int = 0


async def register(db: Db) -> None:
    """The demo hospitals and this run's signing keys (the measured path verifies them)."""
    c = Container.build(db.settings())
    try:
        async with c.sessions() as s, s.begin():
            known = await hospitals.signing_keys(s)
            for h in demo_hospitals():
                if await hospitals.get(s, h.id) is None:
                    await hospitals.add(s, hospitals.Hospital(h.id, h.name, h.region, h.level))
                if (h.id, KEY_ID) not in known:
                    await hospitals.add_key(s, h.id, KEY_ID, public_key_b64(SIGNERS[h.id]))
    finally:
        await c.close()


@contextlib.asynccontextmanager
async def kafka(db: Db) -> AsyncIterator[str]:
    broker = EmbeddedKafka(free_port(), log_file=db.data_dir / "tansu.log")
    await broker.start()
    try:
        await ensure_topics(broker.bootstrap, default_partitions(6))
        yield broker.bootstrap
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def worker(db: Db, bootstrap: str, processes: int = 1) -> AsyncIterator[Child]:
    port = free_port()
    extra = ["--processes", str(processes)] if processes > 1 else []
    env = db.env(MRB_KAFKA_BOOTSTRAP=bootstrap, MRB_WORKER_HEALTH_PORT=str(port))
    async with child([*MRB, "worker", *extra], env, db.data_dir / "worker.log") as w:
        await wait_http(f"http://127.0.0.1:{port}/healthz", w)
        yield w


async def publish_and_wait(db: Db, bootstrap: str, messages: list[DemoMessage]) -> int:
    out = [signed_message(m) for m in messages]
    trust = ReceiptTrust.configured(file=db.data_dir / "keys" / RECEIPT_KEYS_FILE)
    async with ReceiptWatcher(bootstrap, trust=trust) as watcher, Publisher(bootstrap) as pub:
        await pub.publish(out)
        got = await watcher.wait_for({m.message_id: m.hospital for m in out}, timeout=900)
    if len(got) != len(out):
        raise RuntimeError(f"{len(out) - len(got)} of {len(out)} messages got no receipt")
    return len(got)


async def measure(
    db: Db, bootstrap: str, w: Child, *, rounds: int, patients: int, seed: int
) -> WorkerRounds:
    """A warm-up round, then `rounds` rounds of fresh messages through the worker."""
    got = WorkerRounds()
    warm = dataset(patients // 4, seed)
    await publish_and_wait(db, bootstrap, warm)
    reference_rate([m.value for m in warm])  # the models' first use builds validators
    stop = asyncio.Event()
    sampler = asyncio.create_task(w.sample_rss(stop))
    try:
        for r in range(rounds):
            messages = dataset(patients, seed + 1 + r)
            values = [m.value for m in messages]
            # The reference just before and just after the round, averaged: on two shared
            # cores the machine's speed drifts within seconds, and the two bracket it.
            before = reference_rate(values)
            cpu, wall = w.cpu(), time.perf_counter()
            n = await publish_and_wait(db, bootstrap, messages)
            cpu, wall = w.cpu() - cpu, time.perf_counter() - wall
            got.per_cpu_second.append(n / cpu)
            got.per_wall_second.append(n / wall)
            got.reference.append((before + reference_rate(values)) / 2)
            got.messages += n
    finally:
        stop.set()
        await sampler
    got.rss_max = max(w.rss_samples, default=0)
    return got


def signed_message(m: DemoMessage) -> OutgoingMessage:
    """A demo message as its adapter publishes it: signed with this run's key for its
    hospital (one from a hospital that is not registered, a demo's bad case, unsigned)."""
    out = OutgoingMessage(m.hospital, m.value, m.key, m.message_id, m.content_type)
    return out.signed(KEY_ID, SIGNERS[m.hospital]) if m.hospital in SIGNERS else out
