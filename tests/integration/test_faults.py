"""Faults a hospital network has, with real components: a real Tansu broker, the real
worker and database, real adapter processes. Each test is time-capped and asserts the
final index exactly (the worker SIGKILL, database cut, rebalance and SIGTERM cases are
in the worker-process tests; Kafka down during checks in tests/e2e/test_end_to_end.py).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select

from adapters.common.outbox import PENDING, Outbox
from adapters.common.publisher import Publisher, ReceiptWatcher
from adapters.common.signing import create_key
from adapters.hl7v2.mllp import frame
from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.ledger import OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.ingest.service import InboundMessage
from broker.kafka.reading import read_topic
from broker.kafka.topics import RESULTS, RESULTS_DLQ
from broker.security.keys import load_or_create_key
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.storage.tables import (
    inbox,
    ledger_entry,
    notification,
    rejection,
    result,
    result_version,
)
from tests import factories as f
from tests.conftest import REPO, certify, free_port
from tests.conftest import running_worker as worker
from tests.polling import eventually

pytestmark = pytest.mark.slow
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
HB = Order(system=f.LOINC, code="718-7")


async def count(c: Container, table: object) -> int:
    async with c.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


def nested_bundle(depth: int) -> bytes:
    inner = '{"resourceType":"Observation","id":"x"}'
    for _ in range(depth):
        inner = '{"resourceType":"Bundle","type":"collection","entry":[{"resource":' + inner + "}]}"
    return inner.encode()


async def produce(kafka: str, messages: list[InboundMessage]) -> None:
    """Onto one partition, in this order, headers exactly as given (none, broken ...)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for m in messages:
            headers = list(m.headers.items())
            await producer.send_and_wait(RESULTS, m.value or None, partition=0, headers=headers)
    finally:
        await producer.stop()


# -- poison messages -----------------------------------------------------------------------


async def test_poison_in_the_middle_of_a_partition(container: Container, kafka: str) -> None:
    """Each kind of poison goes to the DLQ with its reason; what comes after it on the same
    partition is indexed, and nothing indexed before is lost."""
    container.settings.max_message_bytes = 1024 * 1024
    container.settings.batch_max_records = 4  # poison lands at the start, middle and end
    before = [f.inbound(f.lab_bundle(accession=f"PRE{i}")) for i in range(3)]
    report = json.loads(f.lab_bundle(accession="NUL"))
    report["resourceType"] = "Bund\u0000le"  # PostgreSQL text cannot hold NUL
    header_nul = f.inbound(f.lab_bundle(accession="H"))
    header_nul.headers["mrb-message-id"] = b"0000\x00"
    poison = {
        "MESSAGE_TOO_LARGE": f.inbound(f.lab_bundle(accession="BIG") + b" " * 1_100_000),
        "INVALID_ENCODING": f.inbound(b'{"resourceType":"Bundle","x":"\xc3\x28"}'),
        "NESTING_TOO_DEEP": f.inbound(nested_bundle(10_000)),
        "MISSING_HEADER": InboundMessage(f.lab_bundle(accession="NOHDR"), {}),
        "INVALID_MESSAGE_ID": header_nul,
        "UNSUPPORTED_RESOURCE_TYPE": f.inbound(json.dumps(report).encode()),
        "MALFORMED_JSON": f.inbound(b'{"resourceType":"Bundle","n":1' + b"0" * 5000 + b"}"),
    }
    after = [f.inbound(f.lab_bundle(accession=f"POST{i}")) for i in range(3)]
    async with worker(container, kafka):
        await produce(kafka, before)
        await eventually(lambda: _has(container, inbox, 3), within=40)
        stream: list[InboundMessage] = []
        for i, m in enumerate(poison.values()):
            stream.append(m)
            if i < len(after):
                stream.append(after[i])
        await produce(kafka, stream)
        await eventually(lambda: _has(container, rejection, len(poison)), within=40)
        await eventually(lambda: _has(container, inbox, 6), within=40)
    assert await count(container, result) == 6 and await count(container, result_version) == 6
    dlq = await read_topic(kafka, RESULTS_DLQ)
    codes = Counter(dict(r.headers)["mrb-error-code"].decode() for r in dlq)
    assert codes == Counter(list(poison))
    for record in dlq:
        assert dict(record.headers)["mrb-error-detail"]  # a reason, for each
    async with container.sessions() as s:
        stored = Counter(r.code for r in await s.execute(select(rejection.c.code)))
    assert stored == Counter(list(poison))


async def _has(c: Container, table: object, n: int) -> bool:
    got = await count(c, table)
    assert got <= n, f"{got} rows, expected {n}"
    return got == n


# -- one message delivered many times ------------------------------------------------------


async def test_one_message_delivered_twenty_times(container: Container, kafka: str) -> None:
    container.settings.batch_max_records = 3  # copies in one batch and across batches
    dup = f.outgoing(f.lab_bundle(accession="DUP"), key=b"dup")
    others = [f.outgoing(f.lab_bundle(accession=f"O{i}"), key=f"k{i}".encode()) for i in range(10)]
    wanted = {dup.message_id: "H001", **{m.message_id: "H001" for m in others}}
    seen: list[tuple[str, str]] = []
    trust = f.receipt_trust(container.settings.keys_dir)
    async with (
        worker(container, kafka),
        ReceiptWatcher(kafka, trust=trust) as watcher,
        Publisher(kafka) as pub,
    ):
        for i in range(20):
            await pub.publish([dup, *others[i : i + 1]])
        deadline = time.monotonic() + 40
        while len(seen) < 30:
            assert time.monotonic() < deadline, f"{len(seen)} receipts of 30"
            seen += [(r.message_id, r.outcome) for r in await watcher.poll(wanted)]
    copies = sorted(outcome for mid, outcome in seen if mid == dup.message_id)
    assert copies == ["duplicate"] * 19 + ["indexed"]
    assert sorted(o for mid, o in seen if mid != dup.message_id) == ["indexed"] * 10
    assert await count(container, inbox) == 11
    assert await count(container, result_version) == 11


# -- versions in reverse order -------------------------------------------------------------


async def test_versions_arriving_newest_first(container: Container, kafka: str) -> None:
    """Amended, then final, then preliminary (one result): the amended one stays current,
    the check recognises it, and the older versions arriving later change no saving and
    notify nobody."""
    await certify(container)

    def version(status: str, n: int, hb: float) -> bytes:
        return f.lab_bundle(
            status=status, version=str(n), hb=hb, last_updated=f"2026-05-{17 + n}T09:00:00+08:00"
        )

    amended, final, preliminary = (
        f.outgoing(version("amended", 3, 11.0), key=b"p"),
        f.outgoing(version("final", 2, 12.0), key=b"p"),
        f.outgoing(version("preliminary", 1, 13.0), key=b"p"),
    )
    trust = f.receipt_trust(container.settings.keys_dir)
    async with (
        worker(container, kafka),
        ReceiptWatcher(kafka, trust=trust) as watcher,
        Publisher(kafka) as pub,
    ):
        await pub.publish([amended])
        first = await watcher.wait_for({amended.message_id: "H001"}, timeout=30)
        assert first[amended.message_id].outcome == "indexed"
        check_id, candidate = await check(container)
        assert candidate == "amended"
        await record_outcomes(
            container.outcome_uow(),
            container.reference_rules().catalog,
            check_id,
            [OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED))],
            DOCTOR,
            now=datetime(2026, 5, 20, 2, tzinfo=UTC),
        )
        await pub.publish([final, preliminary])
        later = await watcher.wait_for(
            {final.message_id: "H001", preliminary.message_id: "H001"}, timeout=30
        )
    assert {r.outcome for r in later.values()} == {"indexed"}  # stored as older versions
    async with container.sessions() as s:
        versions = (
            await s.execute(
                select(result_version.c.status, result_version.c.is_current).order_by(
                    result_version.c.version_number
                )
            )
        ).all()
        ledger = [r.kind for r in await s.execute(select(ledger_entry.c.kind))]
    assert [tuple(v) for v in versions] == [
        ("preliminary", False),
        ("final", False),
        ("amended", True),
    ]
    assert await count(container, result) == 1
    assert ledger == ["saving"]  # no reversal, no correction flag
    assert await count(container, notification) == 0
    assert (await check(container))[1] == "amended"


async def check(c: Container) -> tuple[str, str | None]:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", datetime(2026, 5, 20, 1, tzinfo=UTC), (HB,)),
        DOCTOR,
    )
    item = answer.items[0].decision
    assert item.decision.value == "RECOGNIZABLE", item.explanation
    return answer.check_id, item.candidate.status if item.candidate else None


# -- the adapter's outbox corrupted or full ------------------------------------------------

ORU = (
    "MSH|^~\\&|LIS|LAB|MRB|H001|20260518103000||ORU^R01^ORU_R01|{n}|P|2.5.1\r"
    "PID|1||MRN{n}^^^HIS^MR||Zhang^San||19800101|F\r"
    "OBR|1|PL{n}^HIS|FL{n}^LIS|CBC^Blood count^L|||20260518083000||||||||||||||||||F\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||132|g/L|115-150|N|||F|||20260518090000\r"
)


def adapter_env(data: Path, kafka: str) -> dict[str, str]:
    import os

    create_key(data / "keys", "H001")
    return {
        **os.environ,
        "MRB_DATA_DIR": str(data),
        "MRB_KAFKA_BOOTSTRAP": kafka,
        "COLUMNS": "300",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


async def mrb(*args: str, env: dict[str, str], **kw: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", *args,
        env=env, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_corrupted_outbox_is_one_clear_error(tmp_path: Path) -> None:
    env = adapter_env(tmp_path / "adapter", f"127.0.0.1:{free_port()}")  # not reached
    box = tmp_path / "adapter" / "adapter-outbox.db"
    box.write_bytes(b"\x00garbage, not SQLite\xff" * 512)
    sample = tmp_path / "report.json"
    sample.write_bytes(f.lab_bundle())
    for args in (
        ["adapter", "hl7v2", "--hospital", "H001", "--listen", f"127.0.0.1:{free_port()}"],
        ["adapter", "fhir", "--hospital", "H001", str(sample)],
    ):
        proc = await mrb(*args, env=env)
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
        assert proc.returncode == 1, out
        assert "Traceback" not in out, out
        (line,) = [x for x in out.splitlines() if x.startswith("error:")]
        assert str(box) in line and "not a database" in line, out


async def test_a_full_outbox_disk_acknowledges_only_what_it_stored(
    tmp_path: Path, kafka: str
) -> None:
    """The adapter's files may grow to a few hundred KiB (RLIMIT_FSIZE: the disk is full
    for it): every message answered AA is in the outbox, every other one got AE."""
    data = tmp_path / "adapter"
    env = adapter_env(data, kafka)
    Outbox(data / "adapter-outbox.db", load_or_create_key(data / "keys" / "outbox.key")).close()
    load_or_create_key(data / "keys" / "adapter-routing.key")
    limit = (data / "adapter-outbox.db").stat().st_size + 160 * 1024

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    port = free_port()
    proc = await mrb(
        "adapter", "hl7v2", "--hospital", "H001", "--listen", f"127.0.0.1:{port}",
        env=env, preexec_fn=full_disk,
    )  # fmt: skip
    acked: dict[str, str] = {}
    try:
        reader, writer = await _connect(port)
        refused = 0
        for n in range(1, 400):
            writer.write(frame(ORU.format(n=f"M{n:04d}").encode()))
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
            msa = ack.decode().split("MSA|")[1].split("|")
            acked[msa[1].strip()] = msa[0]
            refused += msa[0] == "AE"
            if refused == 5:
                break
        assert refused == 5, "the outbox never filled up"
        assert "207" in ack.decode()  # application internal error: the sender retries
        # Its delivery loop sends what it stored (and cannot note it): it keeps running.
        await eventually(lambda: _published(kafka), within=30)
        writer.write(frame(ORU.format(n="LAST").encode()))
        await writer.drain()
        last = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        assert b"MSA|AE|LAST" in last and proc.returncode is None
        writer.close()
        # A file run on the same full disk: one line, exit 1, nothing queued.
        sample = tmp_path / "report.json"
        sample.write_bytes(f.lab_bundle(accession="FILE"))
        run = await mrb(
            "adapter", "fhir", "--hospital", "H001", "--timeout", "1", str(sample),
            env=env, preexec_fn=full_disk,
        )  # fmt: skip
        said = (await asyncio.wait_for(run.communicate(), 60))[0].decode()
        assert run.returncode == 1 and "Traceback" not in said, said
        assert "could not be written" in said and "were not queued" in said, said
    finally:
        proc.send_signal(signal.SIGINT)
        out = (await asyncio.wait_for(proc.communicate(), 30))[0].decode()
    assert "Traceback" not in out, out
    box = Outbox(data / "adapter-outbox.db", load_or_create_key(data / "keys" / "outbox.key"))
    try:
        stored = {s.origin.split(":")[2].split("#")[0] for s in box.listing(PENDING, limit=1000)}
    finally:
        box.close()
    accepted = {control for control, code in acked.items() if code == "AA"}
    assert len(accepted) >= 3
    assert stored == accepted  # acknowledged = stored, and nothing else


async def _published(kafka: str) -> bool:
    return bool(await read_topic(kafka, RESULTS))


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, "the MLLP listener did not start"
            await asyncio.sleep(0.2)
