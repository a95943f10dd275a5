"""Faults under real `mrb worker` processes (issue 14): PostgreSQL cut away through a TCP
proxy; a worker stopped (SIGTERM) and then killed (SIGKILL) with a batch in flight; workers
joining and dying in one consumer group while they link and merge the same people.

Each ends by checking the index and the ledger exactly against what was published: one
inbox row and one result version per message id, no rejection, nothing in the DLQ, and
for every message at least one receipt, at most one of them `indexed`, any other
`duplicate` (a redelivery the inbox recognised).

Recovery times are logged (pytest --log-cli-level=INFO shows them) for docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from sqlalchemy import func, select

from adapters.common.envelope import OutgoingMessage
from adapters.common.publisher import Publisher
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.identifiers import normalise, resident_id_check_digit
from broker.domain.recognition import Decision, Order
from broker.kafka.reading import read_topic
from broker.kafka.topics import RECEIPTS, RESULTS, RESULTS_DLQ
from broker.services.checks import CheckRequest, run_check
from broker.settings import Settings
from broker.storage.people import People
from broker.storage.prior_items import person_items
from broker.storage.protect import Protector
from broker.storage.tables import inbox, person, rejection, result, result_version
from tests import factories as f
from tests.conftest import certify, free_port
from tests.e2e.test_own_state import (
    Ports,
    Running,
    clean,
    mrb_env,
    ready,
    start,
    stop,
)
from tests.tcp_proxy import TcpProxy

# Each test starts two to four `mrb worker` processes (5-10 s each on a busy 2-core
# machine): above the default 60 s cap there, far below it on an idle one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
log = logging.getLogger("tests.worker_faults")

INSTALLATION = "faults"
GROUP = f"mrb-ingest-{INSTALLATION}"
PARTITIONS = 3  # the kafka fixture's mrb.results.v1
HB = Order(system=f.LOINC, code="718-7")


# -- the installation and its worker processes -------------------------------------------


@dataclass
class Site:
    """One installation under test: its database, keys, Kafka, and how to start workers."""

    settings: Settings
    container: Container
    kafka: str
    logs: Path
    database_url: str  # what the workers use (the proxy's address, when cut in tests)
    started: list[Running] = field(default_factory=list)  # killed, if alive, after the test
    count: int = 0
    env_more: dict[str, str] = field(default_factory=dict)

    def env(self, health: int) -> dict[str, str]:
        more = {
            "MRB_DATABASE_URL": self.database_url,
            "MRB_KAFKA_BOOTSTRAP": self.kafka,
            "MRB_INSTALLATION_ID": INSTALLATION,
            "MRB_CONSUMER_SESSION_TIMEOUT_MS": "2000",  # a dead member is noticed in ~2 s
            "MRB_WORKER_HEALTH_PORT": str(health),
            "MRB_LOG_LEVEL": "WARNING",  # no line per message: thousands of them
            **self.env_more,
        }
        if self.settings.database_schema:
            more["MRB_DATABASE_SCHEMA"] = self.settings.database_schema
        return mrb_env(self.settings.data_dir, Ports(), **more)

    async def worker(self) -> Worker:
        """A `mrb worker` process, once it answers ready with Kafka connected."""
        health = free_port()
        env = self.env(health)
        self.count += 1  # before the await: workers may start concurrently
        running = await start(["worker"], env, self.logs / f"worker-{self.count}")
        self.started.append(running)
        w = Worker(running, health, int(env["MRB_METRICS_PORT"]))
        began = time.monotonic()
        try:
            await ready(f"http://127.0.0.1:{health}", running, timeout=40)
        except BaseException:
            w.kill()
            raise
        log.info("worker %d ready in %.1f s", running.pid, time.monotonic() - began)
        return w


@dataclass
class Worker:
    running: Running
    health: int
    metrics: int

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.running.proc.kill()

    async def metric(self, name: str) -> float | None:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{self.metrics}/metrics")).text
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None


# -- messages ------------------------------------------------------------------------------


def resident(n: int) -> str:
    """A valid resident ID per n: a real birth date (an impossible one never links)."""
    born = date(1950, 1, 1) + timedelta(days=n)
    first17 = f"110105{born:%Y%m%d}{n % 1000:03d}"
    return first17 + resident_id_check_digit(first17)


@dataclass(frozen=True)
class Sent:
    message: OutgoingMessage
    accession: str
    resident: str

    @property
    def id(self) -> str:
        return self.message.message_id


def lab(
    i: int, prefix: str, *, hospital: str = "H001", people: int = 0, national: bool = True
) -> Sent:
    """A small signed lab result: its own patient, or one of `people` shared residents
    (`national`: with the resident ID, else with the hospital's MRN only)."""
    who = resident(i % people if people else 10_000 + i)
    accession = f"{prefix}{i}"
    pat = f.patient(
        national_id=who if national else None, mrn=f"{hospital}-{who}", pid=f"{hospital}-{who}"
    )
    value = f.lab_bundle(accession=accession, pat=pat)
    return Sent(f.outgoing(value, hospital, f"{hospital}-{i}".encode()), accession, who)


async def publish(kafka: str, sent: list[Sent], chunk: int = 500) -> None:
    async with Publisher(kafka) as publisher:
        for i in range(0, len(sent), chunk):
            await publisher.publish(s.message for s in sent[i : i + chunk])


# -- the index, the ledger, the group --------------------------------------------------------


async def count(c: Container, table: object) -> int:
    async with c.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())


async def wait_indexed(c: Container, n: int, timeout: float, *running: Worker) -> float:
    """Seconds until `n` inbox rows exist (fails, naming progress, after `timeout`)."""
    began = time.monotonic()
    while (have := await count(c, inbox)) < n:
        for w in running:
            code = w.running.proc.returncode
            assert code is None, f"worker exited {code}: {w.running.stderr()[-3000:]}"
        assert time.monotonic() - began < timeout, f"{have} of {n} indexed after {timeout}s"
        await asyncio.sleep(0.2)
    return time.monotonic() - began


async def assert_exactly_once(site: Site, sent: list[Sent]) -> Counter[str]:
    """One inbox row and one result version per message, nothing rejected or dead-lettered,
    every message answered; the receipts' outcomes, counted."""
    ids = Counter(s.id for s in sent)
    assert len(ids) == len(sent)
    c = site.container
    async with c.sessions() as s:
        inboxed = Counter((await s.scalars(select(inbox.c.message_id))).all())
        versions = Counter((await s.scalars(select(result_version.c.message_id))).all())
    assert inboxed == ids
    assert versions == ids
    assert await count(c, result) == len(sent)
    assert await count(c, rejection) == 0
    assert await read_topic(site.kafka, RESULTS_DLQ) == []
    outcomes: dict[str, list[str]] = {}
    for r in await read_topic(site.kafka, RECEIPTS):
        body = json.loads(r.value or b"{}")
        outcomes.setdefault(body["message_id"], []).append(body["outcome"])
    assert outcomes.keys() == ids.keys()
    for got in outcomes.values():
        assert set(got) <= {"indexed", "duplicate"} and got.count("indexed") <= 1, got
    return Counter(o for got in outcomes.values() for o in got)


async def committed(kafka: str) -> int:
    """The group's committed offsets, summed over mrb.results.v1 (its consumed messages)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=GROUP, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(RESULTS, p) for p in range(PARTITIONS)]
        return sum([await consumer.committed(tp) or 0 for tp in tps])
    finally:
        await consumer.stop()


async def members(kafka: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([GROUP])
        return sorted(m[0] for m in described.groups[0][5])
    finally:
        await admin.close()


def report(what: str, seconds: float) -> None:
    log.info("recovery: %s: %.1f s", what, seconds)


# -- 1. PostgreSQL cut away ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_postgres_cut_away_pauses_the_partitions_and_catches_up(site: Site) -> None:
    """The proxy resets every connection mid-stream and refuses new ones for ~7 s (more
    than three session timeouts): the worker rewinds, pauses its partitions and keeps
    polling, so it stays the group's member; it commits nothing and dead-letters nothing;
    once a probe answers it resumes from the rewound offsets and catches up."""
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    site.database_url = site.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    site.env_more["MRB_BATCH_MAX_RECORDS"] = "50"  # small batches: the cut lands mid-stream
    sent = [lab(i, "PG") for i in range(1200)]
    try:
        worker = await site.worker()
        group_before = await members(site.kafka)
        publishing = asyncio.create_task(publish(site.kafka, sent, chunk=100))
        await wait_indexed(site.container, 200, 60, worker)

        await proxy.cut()  # mid-stream: batches in flight lose their connection
        cut_at = time.monotonic()
        while await worker.metric("mrb_ingest_paused") != 1.0:
            assert time.monotonic() - cut_at < 20, worker.running.stderr()[-3000:]
            await asyncio.sleep(0.1)
        await publishing
        during = await count(site.container, inbox)
        offsets = await committed(site.kafka)
        # Three session timeouts without the database: still the same member of the
        # group, nothing committed past what was indexed, nothing dead-lettered.
        await asyncio.sleep(6)
        assert worker.running.proc.returncode is None
        assert await members(site.kafka) == group_before
        assert await committed(site.kafka) == offsets <= during
        assert await count(site.container, inbox) == during < len(sent)
        assert await read_topic(site.kafka, RESULTS_DLQ) == []
        async with httpx.AsyncClient() as client:
            down = await client.get(f"http://127.0.0.1:{worker.health}/readyz")
        assert down.status_code == 503 and "database unavailable" in down.text
        outage = time.monotonic() - cut_at

        await proxy.restore()
        restored = time.monotonic()
        while await worker.metric("mrb_ingest_paused") != 0.0:  # the next probe
            assert time.monotonic() - restored < 30, worker.running.stderr()[-3000:]
            await asyncio.sleep(0.1)
        report("PostgreSQL back -> partitions resumed", time.monotonic() - restored)
        await wait_indexed(site.container, len(sent), 60, worker)
        report(
            f"PostgreSQL back after a {outage:.0f} s outage -> all "
            f"{len(sent) - during} waiting messages indexed",
            time.monotonic() - restored,
        )
        assert await members(site.kafka) == group_before
        receipts = await assert_exactly_once(site, sent)
        log.info("receipts: %s", dict(receipts))

        assert await stop(worker.running, signal.SIGTERM, group=False) == 0
        stderr = worker.running.stderr()
        assert "partitions paused" in stderr and "partitions resumed" in stderr
        clean(stderr)  # warnings only: no traceback, no error line
    finally:
        await proxy.stop()


# -- 2. SIGTERM and SIGKILL with a batch in flight ----------------------------------------------


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_worker_stopped_then_killed_mid_batch_loses_nothing(site: Site) -> None:
    """SQLite, the default store. SIGTERM: the batch in flight completes and is committed
    before the worker leaves; it exits 0 without a traceback. SIGKILL: the transaction in
    flight is rolled back from the journal, the batch comes again, and what had been
    indexed but not committed is answered `duplicate`. Nothing is lost either way."""
    site.env_more["MRB_BATCH_MAX_RECORDS"] = "250"
    sent = [lab(i, "K") for i in range(3000)]
    first = await site.worker()
    await publish(site.kafka, sent)
    await wait_indexed(site.container, 1, 60, first)  # busy from now on
    before = await count(site.container, inbox)
    asked = time.monotonic()
    assert await stop(first.running, signal.SIGTERM, group=False) == 0
    report("SIGTERM mid-stream -> exited", time.monotonic() - asked)
    drained = await count(site.container, inbox)
    assert await committed(site.kafka) == drained  # nothing indexed and not committed
    log.info("drain: %d indexed at SIGTERM, %d once exited", before, drained)
    clean(first.running.stderr())  # no traceback, no error line

    second = await site.worker()  # starts where the first stopped
    await wait_indexed(site.container, drained + 1000, 60, second)
    second.running.proc.kill()  # SIGKILL: no cleanup, no commit, no leaving the group
    killed = time.monotonic()
    await second.running.proc.wait()
    at_kill = await count(site.container, inbox)
    offsets = await committed(site.kafka)
    log.info("at the kill: %d indexed, %d committed", at_kill, offsets)

    third = await site.worker()  # its group waits out the dead member's session
    await wait_indexed(site.container, len(sent), 90, third)
    report(f"SIGKILL with {len(sent) - at_kill} to go -> all indexed", time.monotonic() - killed)
    receipts = await assert_exactly_once(site, sent)
    # Only what was indexed but not committed at the kill came twice.
    assert receipts["duplicate"] == at_kill - offsets, receipts
    assert await stop(third.running, signal.SIGTERM, group=False) == 0


# -- 3. a consumer group growing and losing members --------------------------------------------


@dataclass(frozen=True)
class GroupRun:
    """What a group scenario measured (the performance issue reads these too)."""

    messages: int
    seconds: float  # first publish -> everything indexed
    rebalanced: float  # the member killed -> everything indexed
    receipts: Counter[str]


def shared_people(n: int, people: int, prefix: str) -> list[Sent]:
    """`n` results of `people` residents, in rounds from H001 and H002 in turn, keyed so
    that each resident's results fall on several partitions: workers link the same person
    at the same moment. H002's first round carries its MRN only (a second person), its
    later ones the MRN and the resident ID: the two people are merged."""
    assert n >= 4 * people
    out = []
    for i in range(n):
        round_ = i // people
        hospital = ("H001", "H002")[round_ % 2]
        out.append(lab(i, prefix, hospital=hospital, people=people, national=round_ != 1))
    by_resident: dict[str, set[int]] = {}
    for s in out:
        partition = (murmur2(s.message.key or b"") & 0x7FFFFFFF) % PARTITIONS
        by_resident.setdefault(s.resident, set()).add(partition)
    assert all(len(p) > 1 for p in by_resident.values())  # every resident split
    return out


async def group_scenario(site: Site, *, workers: int, messages: int, people: int) -> GroupRun:
    """`workers - 1` workers of one group, one more joining while the first half of the
    messages flows, then one of the first SIGKILLed as the second half is sent (its
    partition must be taken over); ends once everything is indexed, checked exactly once."""
    sent = shared_people(messages, people, f"G{workers}-")
    half = messages // 2
    started = list(await asyncio.gather(*(site.worker() for _ in range(workers - 1))))
    began = time.monotonic()
    publishing = asyncio.create_task(publish(site.kafka, sent[:half], chunk=100))
    await wait_indexed(site.container, messages // 8, 120, *started)
    log.info("group: %.1f s, a worker joins", time.monotonic() - began)
    started.append(await site.worker())  # joins mid-stream: a rebalance
    await publishing
    await wait_indexed(site.container, messages // 3, 120, *started)
    victim = started[0]
    victim.running.proc.kill()  # mid-batch, probably: it is indexing the first half
    killed = time.monotonic()
    log.info("group: %.1f s, a worker killed", killed - began)
    await victim.running.proc.wait()
    alive = [w for w in started if w is not victim]
    await publish(site.kafka, sent[half:])
    await wait_indexed(site.container, messages, 120, *alive)
    done = time.monotonic()
    log.info("group: %.1f s, all indexed", done - began)
    assert len(await members(site.kafka)) == workers - 1
    receipts = await assert_exactly_once(site, sent)
    stopped = [stop(w.running, signal.SIGTERM, group=False) for w in alive]
    assert await asyncio.gather(*stopped) == [0] * len(alive)
    log.info("group: %.1f s, workers stopped", time.monotonic() - began)
    await assert_one_person_each(site, sent)
    log.info("group: %.1f s, people checked", time.monotonic() - began)
    return GroupRun(messages, done - began, done - killed, receipts)


async def assert_one_person_each(site: Site, sent: list[Sent]) -> None:
    """Each resident is one person, holding every result sent for them, and a doctor's
    recognition check finds them."""
    c = site.container
    protector = Protector(c.cipher, c.pseudonyms)
    expected: dict[str, set[str]] = {}
    async with c.sessions() as s:
        merged = {r.id: r.merged_into for r in await s.execute(select(person))}
        keys = {
            protector.business_key(
                m.message.hospital, f"DiagnosticReport|urn:lab:H001|{m.accession}"
            ): m
            for m in sent
        }
        rows = (
            await s.execute(select(result.c.id, result.c.business_id, result.c.person_id))
        ).all()
        owners: dict[str, set[str]] = {}
        for row in rows:
            who = keys[row.business_id].resident
            expected.setdefault(who, set()).add(row.id)
            alive = row.person_id
            while merged.get(alive):
                alive = merged[alive]
            owners.setdefault(who, set()).add(alive)
        for who, results in expected.items():
            ident = normalise(f.NATIONAL, who, hospital="H002")
            assert ident is not None
            found = await People(s, c.pseudonyms).find(ident)
            assert owners[who] == {found}, who  # one person, every result linked to it
            items = await person_items(s, found or "", protector)
            assert {i.result_id for i in items} == results
    assert len(expected) == len({s.resident for s in sent})
    async with c.sessions() as s:
        merges = await s.scalar(
            select(func.count()).select_from(person).where(person.c.merged_into.is_not(None))
        )
    assert merges  # the MRN-only people were merged into the resident's
    await certify(c, "H001")
    await certify(c, "H002")
    doctor = Actor("dr-faults", Role.DOCTOR, "H002")
    for who in sorted(expected)[:3]:
        answer = await run_check(
            c.check_uow(),
            c.reference_rules(),
            CheckRequest(f.NATIONAL, who, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
            doctor,
        )
        assert answer.items[0].decision.decision is Decision.RECOGNIZABLE


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_three_workers_with_a_rebalance_link_each_person_once(site: Site) -> None:
    run = await group_scenario(site, workers=3, messages=1500, people=40)
    report(f"3 workers, 1 SIGKILLed mid-stream: last of {run.messages} indexed", run.rebalanced)
    log.info(
        "group: %d messages in %.1f s; receipts %s", run.messages, run.seconds, dict(run.receipts)
    )
