"""`mrb demo`: the embedded stack plus a synthetic multi-hospital sample, end to end."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from adapters.common.envelope import OutgoingMessage
from adapters.common.publisher import Publisher, Receipt, ReceiptWatcher
from broker.demo.dataset import NATIONAL_ID_SYSTEM, DemoDataset, DemoMessage, generate
from broker.domain.identifiers import normalise
from broker.runtime import Stack, install_signal_handlers, running_stack, wait_for_failure_or_stop
from broker.settings import Settings
from broker.storage import hospitals as registry
from broker.storage.people import People
from broker.storage.tables import person, result, result_item, result_version

SHANGHAI = ZoneInfo("Asia/Shanghai")


def demo_settings(settings: Settings) -> Settings:
    """The demo keeps its own SQLite file (recreated each run) unless a URL is set.

    A short consumer session makes the single worker join its group in ~1.5 s.
    """
    if "consumer_session_timeout_ms" not in settings.model_fields_set:
        settings = settings.model_copy(update={"consumer_session_timeout_ms": 3000})
    if settings.database_url:
        return settings
    demo_dir = settings.data_dir / "demo"
    for stale in demo_dir.glob("mrb.db*"):
        stale.unlink()
    return settings.model_copy(update={"data_dir": demo_dir})


async def run_demo(
    settings: Settings, *, patients: int, keep_serving: bool, console: Console
) -> None:
    settings = demo_settings(settings)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    console.print("[bold]mrb demo[/bold]: starting the embedded stack…")
    async with running_stack(
        settings, api=True, worker=True, kafka_needed=True, stop=stop
    ) as stack:
        where = "embedded Tansu" if stack.kafka else "MRB_KAFKA_BOOTSTRAP"
        console.print(
            f"Kafka: {stack.container.kafka_bootstrap} ({where}); "
            f"database: {settings.resolved_database_url.split('://')[0]}"
        )
        dataset = generate(now=datetime.now(SHANGHAI), patients=patients)
        await _register(stack, dataset)
        receipts, seconds = await _publish(stack, dataset, console)
        await _summary(stack, dataset, receipts, seconds, console)
        if keep_serving:
            console.print(
                f"\nServing on {stack.api_url} (OpenAPI: {stack.api_url}/docs). "
                "Ctrl-C stops everything."
            )
            await wait_for_failure_or_stop(stack)


async def _register(stack: Stack, dataset: DemoDataset) -> None:
    async with stack.container.sessions() as session, session.begin():
        for h in dataset.hospitals:
            await registry.add(
                session, registry.Hospital(h.id, h.name, h.region, h.level), replace=True
            )


async def _publish(
    stack: Stack, dataset: DemoDataset, console: Console
) -> tuple[dict[str, Receipt], float]:
    bootstrap = stack.container.kafka_bootstrap
    if bootstrap is None:
        raise RuntimeError("the demo needs Kafka: embedded or MRB_KAFKA_BOOTSTRAP")
    messages = [_envelope(m) for m in dataset.messages]
    started = time.perf_counter()
    async with ReceiptWatcher(bootstrap) as watcher, Publisher(bootstrap) as publisher:
        with Progress(console=console) as progress:
            task = progress.add_task("publishing and indexing", total=len(messages))
            await publisher.publish(messages)
            receipts = await watcher.wait_for(
                {m.message_id for m in messages},
                timeout=300,
                progress=lambda n: progress.update(task, completed=n),
            )
    return receipts, time.perf_counter() - started


def _envelope(m: DemoMessage) -> OutgoingMessage:
    return OutgoingMessage(
        hospital=m.hospital,
        value=m.value,
        key=m.key,
        message_id=m.message_id,
        content_type=m.content_type,
    )


async def _summary(
    stack: Stack,
    dataset: DemoDataset,
    receipts: dict[str, Receipt],
    seconds: float,
    console: Console,
) -> None:
    async with stack.container.sessions() as session:
        n_results = (await session.execute(select(func.count()).select_from(result))).scalar_one()
        n_versions = (
            await session.execute(select(func.count()).select_from(result_version))
        ).scalar_one()
        n_people = (
            await session.execute(
                select(func.count()).select_from(person).where(person.c.merged_into.is_(None))
            )
        ).scalar_one()
        n_items = (
            await session.execute(select(func.count()).select_from(result_item))
        ).scalar_one()
    outcomes = Counter(r.outcome for r in receipts.values())
    console.print(
        f"\n[bold green]indexed[/bold green]: {outcomes['indexed']} messages "
        f"({outcomes['duplicate']} duplicates, {outcomes['rejected']} rejected) → "
        f"{n_results} results, {n_versions} versions, {n_items} indexed items, "
        f"{n_people} people, {len(dataset.hospitals)} hospitals"
    )
    total_results = sum(r.results for r in receipts.values())
    console.print(
        f"throughput: {len(receipts)} messages in {seconds:.1f}s = "
        f"{len(receipts) / seconds:.0f} messages/s, {total_results / seconds:.0f} results/s "
        "(publish → receipt, including FHIR validation and database commit)"
    )
    table = Table("rejected", "hospital", "reason")
    for m in dataset.messages:
        r = receipts.get(m.message_id)
        if r is not None and r.outcome == "rejected":
            table.add_row(r.error_code or "", m.hospital, (r.error_detail or "")[:90])
    console.print(table)
    unexpected = [
        m.note
        for m in dataset.messages
        if (r := receipts.get(m.message_id)) is None
        or (m.expect == "rejected") != (r.outcome == "rejected")
        or (m.expect_code is not None and r.error_code != m.expect_code)
    ]
    if unexpected:
        console.print(
            f"[red]{len(unexpected)} message(s) did not end as expected:[/red] "
            f"{', '.join(unexpected[:5])}"
        )
    await _example_check(stack, dataset, console)


async def _example_check(stack: Stack, dataset: DemoDataset, console: Console) -> None:
    """Ask the running API about a patient whose test was done at two hospitals."""
    example = await _repeated_test(stack, dataset)
    if example is None:
        console.print("[yellow]no patient with one item at two hospitals in this sample[/yellow]")
        return
    national_id, ordering, items = example
    body = {
        "patient": {"system": NATIONAL_ID_SYSTEM, "value": national_id},
        "ordering_hospital": ordering,
        "order_time": datetime.now(SHANGHAI).isoformat(timespec="seconds"),
        "items": items,
    }
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        response = await client.post("/api/v1/recognition/check", json=body)
    console.print(f"\nExample check: a patient ordered at {ordering} who had this done elsewhere:")
    if response.status_code != 200:
        console.print(f"[red]check failed: {response.status_code} {response.text}[/red]")
        return
    for item in response.json()["items"]:
        found = [item["candidate"], *item["other_results"]] if item["candidate"] else []
        seen = ", ".join(f"{c['hospital']} {str(c['effective'])[:10]}" for c in found) or "-"
        console.print(f"  {item['name']['en'][:36]:36} {item['decision']:16} {seen}")
    console.print("Try it yourself:")
    console.print(
        f"  curl -s -X POST {stack.api_url}/api/v1/recognition/check "
        f"-H 'content-type: application/json' -d '{json.dumps(body, ensure_ascii=False)}'",
        soft_wrap=True,
    )


async def _repeated_test(
    stack: Stack, dataset: DemoDataset
) -> tuple[str, str, list[dict[str, object]]] | None:
    """A patient, a hospital and items where the index holds results from two hospitals."""
    by_person = {}
    for p in dataset.patients:
        ident = normalise(NATIONAL_ID_SYSTEM, p.national_id, hospital=p.hospitals[0])
        if ident is not None:
            async with stack.container.sessions() as session:
                person_id = await People(session, stack.container.pseudonyms).find(ident)
            if person_id is not None:
                by_person[person_id] = p
        if len(by_person) >= 60:
            break
    async with stack.container.sessions() as session:
        rows = await session.execute(
            select(result_item.c.person_id, result_item.c.code_system, result_item.c.code)
            .where(
                result_item.c.person_id.in_(list(by_person)),
                result_item.c.code_system == "http://loinc.org",
                result_item.c.resource_type == "Observation",
            )
            .group_by(result_item.c.person_id, result_item.c.code_system, result_item.c.code)
            .having(func.count(func.distinct(result_item.c.hospital_id)) >= 2)
            .order_by(result_item.c.person_id)
        )
        found = rows.first()
    if found is None:
        return None
    patient = by_person[found.person_id]
    items: list[dict[str, object]] = [
        {"system": found.code_system, "code": found.code},
        {"modality": "CT", "body_site": {"system": "http://snomed.info/sct", "code": "51185008"}},
    ]
    return patient.national_id, patient.hospitals[0], items
