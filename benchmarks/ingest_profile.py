"""The ingest use case alone, in this process, on a fixed round of signed demo messages:
what a change to parsing, staging or writing costs, without Kafka and without the
machine's noise (docs/performance.md, "Tenth round").

    python -m benchmarks.ingest_profile [postgres|sqlite]
    valgrind --tool=callgrind --instr-atstart=no python -m benchmarks.ingest_profile --callgrind

A fresh database (a PostgreSQL schema made and dropped, or a SQLite file), the demo
hospitals and the bench's signing keys; a warm-up of about 300 messages, then one round
of about 1,200 (MRB_BENCH_INGEST_PATIENTS, seeds fixed) through
`IngestService.process_batch` in batches of 250, timed by this process's CPU clock. With
`--callgrind` the instrumentation is switched on for that round only (callgrind_control),
so the total instructions callgrind prints at exit are the round's: the same messages
give the same count to within a fraction of a percent, where CPU time moves by 10-20 %
from one minute to the next on this machine. Receipts and the Kafka consumer are not in
it (the worker does those): the bench's ingest section measures the whole worker.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import ingest_bench
from benchmarks.config import BenchConfig
from benchmarks.databases import database
from broker.bootstrap import Container
from broker.demo.dataset import DemoMessage
from broker.ingest.envelope import InboundMessage
from broker.ingest.fhir_validation import warm_validation
from mrb_wire.topics import RESULTS

BATCH = 250


def inbound(messages: list[DemoMessage], first_offset: int) -> list[InboundMessage]:
    """The messages as the worker hands them over: signed, with their Kafka headers."""
    out = []
    for i, m in enumerate(messages):
        signed = ingest_bench.signed_message(m)
        out.append(
            InboundMessage(
                value=signed.value,
                headers=dict(signed.headers()),
                key=signed.key.encode() if isinstance(signed.key, str) else signed.key,
                topic=RESULTS,
                partition=0,
                offset=first_offset + i,
            )
        )
    return out


def _callgrind(on: bool) -> None:
    state = "on" if on else "off"
    subprocess.run(
        ["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True
    )


async def main(kind: str, callgrind: bool) -> None:
    cfg = BenchConfig()
    root = Path(tempfile.mkdtemp(prefix="mrb-ingest-profile-"))
    try:
        async with database(kind, root / "db", cfg.pg_url) as db:
            await ingest_bench.register(db)
            container = Container.build(db.settings())
            try:
                service = container.ingest_service()
                warm_validation("fast")
                warm = inbound(ingest_bench.dataset(cfg.ingest_patients // 4, 1), 0)
                for i in range(0, len(warm), BATCH):
                    await service.process_batch(warm[i : i + BATCH])
                messages = inbound(ingest_bench.dataset(cfg.ingest_patients, 11), 100_000)
                gc.collect()
                gc.freeze()  # as the worker does after its first batch
                if callgrind:
                    _callgrind(True)
                started = time.process_time()
                for i in range(0, len(messages), BATCH):
                    await service.process_batch(messages[i : i + BATCH])
                cpu = time.process_time() - started
                if callgrind:
                    _callgrind(False)
            finally:
                await container.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if callgrind:  # under valgrind CPU times mean nothing: its instruction total does
        print(f"{kind}: {len(messages)} messages; the round's instructions: callgrind's total")
        return
    reference = ingest_bench.reference_rate([m.value for m in messages])
    rate = len(messages) / cpu
    print(
        f"{kind}: {len(messages)} messages, {cpu:.3f} CPU-s, {rate:,.0f} msg/CPU-s; "
        f"full validation alone {reference:,.0f} msg/CPU-s (ratio {rate / reference:.2f})"
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(next((a for a in args if not a.startswith("-")), "postgres"), "--callgrind" in args)
    )
