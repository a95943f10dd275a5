"""`mrb bench load`: fill the index with synthetic people and results for `make bench`.

The people are numbered (broker/demo/synthetic_index.py): `--start` continues a load, so
an index can grow from 100k to 1M results between measurements. The demo hospitals and
their QC certifications are registered first, so checks against the loaded people get
real decisions. Needs the database and keys (`mrb db upgrade`, `mrb keys init`).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from broker.bootstrap import Container
from broker.cli.context import with_container
from broker.demo import registry as demo_registry
from broker.demo import synthetic_index
from broker.demo.dataset import demo_hospitals
from broker.storage import hospitals
from broker.storage.bench_load import (
    BulkIndex,
    NewMessage,
    follow_sequences,
    refresh_statistics,
)
from broker.storage.protect import Protector

app = typer.Typer(help="Benchmark data (never on a production index).", no_args_is_help=True)
SHANGHAI = ZoneInfo("Asia/Shanghai")
# People per transaction: about 10 results each, so some 50,000 rows per commit.
CHUNK = 1000


@app.command("load")
def load(
    people: Annotated[int, typer.Option(min=0, help="People to add.")] = 10_000,
    results: Annotated[
        int, typer.Option(min=1, max=20, help="Results per person (the last code stays free).")
    ] = 10,
    start: Annotated[int, typer.Option(min=0, help="Number of the first person added.")] = 0,
    extra: Annotated[
        list[str] | None,
        typer.Option(help="NUMBER:RESULTS, one more person with that many results (repeatable)."),
    ] = None,
) -> None:
    """Add synthetic people with their results (sealed payloads, pseudonymised links)
    through the storage layer's bulk writer; prints what it wrote as one JSON line."""
    extras = [_extra(e) for e in extra or []]

    async def work(c: Container) -> dict[str, object]:
        started = time.perf_counter()
        now = datetime.now(SHANGHAI)
        await _register(c, now)
        protector = Protector(c.cipher, c.pseudonyms)
        async with c.sessions() as s:
            bulk = await BulkIndex.starting_after(s, protector, c.cipher, now)
        todo = [(n, results) for n in range(start, start + people)] + extras
        for i in range(0, len(todo), CHUNK):
            async with c.sessions() as s, s.begin():
                for number, count in todo[i : i + CHUNK]:
                    bulk.add_person(_messages(number, count, now))
                await bulk.flush(s)
        async with c.sessions() as s, s.begin():
            await follow_sequences(s)
            await refresh_statistics(s)
        return {
            "people": len(todo),
            "rows": bulk.written,
            "seconds": round(time.perf_counter() - started, 3),
        }

    typer.echo(json.dumps(with_container(work)))


def _extra(spec: str) -> tuple[int, int]:
    number, _, count = spec.partition(":")
    try:
        return int(number), int(count)
    except ValueError:
        raise typer.BadParameter(f"{spec!r}: expected NUMBER:RESULTS") from None


def _messages(number: int, results: int, now: datetime) -> list[NewMessage]:
    return [
        NewMessage(m.message_id, m.hospital, m.content_type, m.value, m.parsed)
        for m in synthetic_index.person_messages(number, results, now)
    ]


async def _register(c: Container, now: datetime) -> None:
    """The demo hospitals, their grades and alliance, and QC certifications valid today."""
    async with c.sessions() as s, s.begin():
        known = {h.id for h in await hospitals.list_all(s)}
        entries = demo_registry.hospitals(demo_hospitals())
        for entry in entries:
            await hospitals.add(s, entry, replace=True)
        if not known:  # certify once: a continued load keeps the first load's
            ids = {e.id for e in entries}
            for cert in demo_registry.certifications(now.date()):
                if cert.hospital in ids:
                    await hospitals.certify(s, cert, reference="bench")
