"""`mrb demo`: the embedded stack plus a synthetic multi-hospital sample, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.common.delivery import deliver
from adapters.common.envelope import OutgoingMessage
from adapters.common.outbox import Outbox
from adapters.common.publisher import Receipt
from adapters.common.receipts import RECEIPT_KEYS_FILE, ReceiptTrust
from adapters.common.signing import SigningKeyMissing, create_key, current_key, public_key_b64
from broker.cli import demo_outcomes, demo_rights
from broker.cli.demo_outcomes import DemoCheck
from broker.demo import registry as demo_registry
from broker.demo import rights, scenarios
from broker.demo.dataset import (
    DEFAULT_SEED as DEMO_SEED,
)
from broker.demo.dataset import NATIONAL_ID_SYSTEM, DemoDataset, DemoMessage, generate
from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.runtime import (
    Stack,
    claim,
    install_signal_handlers,
    running_stack,
    wait_for_failure_or_stop,
)
from broker.security.keys import load_or_create_key
from broker.settings import Settings
from broker.storage import demo_data
from broker.storage import hospitals as registry

SHANGHAI = ZoneInfo("Asia/Shanghai")


def demo_settings(settings: Settings) -> Settings:
    """The demo keeps its own SQLite file (recreated each run) unless a URL is set.

    A short consumer session makes the single worker join its group in ~1.5 s, and the
    showcase's batch of checks runs without the per-person rate limits.
    """
    if "consumer_session_timeout_ms" not in settings.model_fields_set:
        settings = settings.model_copy(update={"consumer_session_timeout_ms": 3000})
    # The showcase checks every sample patient as three doctors within seconds: a batch,
    # not people at work, so the per-person limits are off unless set (the per-address
    # limit stays; docs/security.md).
    for per_person in ("rate_limit_per_minute", "distinct_patients_per_hour"):
        if per_person not in settings.model_fields_set:
            settings = settings.model_copy(update={per_person: 0})
    if settings.database_url:
        return settings
    # Its own folder; the SQLite file there is recreated by reset_demo_database, once
    # this process holds the folder and its ports.
    return settings.model_copy(update={"data_dir": settings.data_dir / "demo"})


def reset_demo_database(settings: Settings) -> None:
    """Delete the demo's own SQLite file for a fresh run: only once this process holds the
    folder's lock and every port (claim), never under a running demo."""
    if settings.database_url:
        return
    for stale in settings.data_dir.glob("mrb.db*"):
        stale.unlink()


async def run_demo(
    settings: Settings, *, patients: int, keep_serving: bool, console: Console
) -> None:
    settings = demo_settings(settings)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    console.print("[bold]mrb demo[/bold]: starting the embedded stack…")
    # The folder and every port first: a second demo beside a running one stops here,
    # before it deletes anything of the first's.
    claimed = claim(
        settings, api=True, worker=True, kafka_needed=True, command="mrb demo", lock=True
    )
    try:
        reset_demo_database(settings)
        async with running_stack(
            settings, api=True, worker=True, kafka_needed=True, stop=stop, claimed=claimed
        ) as stack:
            where = "embedded Tansu" if stack.kafka else "MRB_KAFKA_BOOTSTRAP"
            console.print(
                f"Kafka: {stack.container.kafka_bootstrap} ({where}); "
                f"database: {settings.resolved_database_url.split('://')[0]}"
            )
            # Ctrl-C / SIGTERM while the sample is replayed: the adapters stop first, then
            # the stack (worker, then broker) as it leaves this block.
            if not await _unless_stopped(_replay(stack, patients, console), stop):
                console.print("stopped before the sample was replayed")
                return
            if keep_serving:
                console.print(
                    f"\nServing on {stack.api_url} (OpenAPI: {stack.api_url}/docs). "
                    "Ctrl-C stops everything."
                )
                await wait_for_failure_or_stop(stack)
    finally:
        claimed.release()


async def _replay(stack: Stack, patients: int, console: Console) -> None:
    """The sample through the adapters, then the checks, outcomes and reports."""
    now = datetime.now(SHANGHAI)
    story = scenarios.build(DEMO_SEED, now)
    privacy = rights.build(DEMO_SEED, now)  # issue "Patient rights": an HIV result
    dataset = _with_forgeries(generate(now=now, seed=DEMO_SEED, patients=patients))
    dataset = replace(
        dataset,
        hospitals=(*dataset.hospitals, scenarios.CHONGQING),
        messages=(*dataset.messages, *story.messages, privacy.message),
    )
    signers = await _register(stack, dataset)
    receipts, seconds = await _publish(stack, dataset, signers, console)
    checks = await _summary(stack, dataset, receipts, seconds, console)
    await _rules_v2_story(stack, story, console)
    await demo_rights.show(stack, privacy, console)
    await _outcomes(stack, checks, signers, console)


async def _unless_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` until it ends (True) or stop is set (False: it is cancelled first)."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False
    task.result()  # its failure, if any
    return True


Signer = tuple[str, Ed25519PrivateKey]


async def _register(stack: Stack, dataset: DemoDataset) -> dict[str, Signer]:
    """Hospitals with grades, an alliance, QC certifications and signing keys.

    Each demo hospital's adapter key lives in MRB_DATA_DIR/keys/hospitals/ (made once);
    its public half is registered here as `mrb hospital key add` would.
    """
    keys_dir = stack.container.settings.keys_dir
    signers: dict[str, Signer] = {}
    for h in dataset.hospitals:
        try:
            signers[h.id] = current_key(keys_dir, h.id)
        except SigningKeyMissing:
            create_key(keys_dir, h.id)
            signers[h.id] = current_key(keys_dir, h.id)
    async with stack.container.sessions() as session, session.begin():
        for entry in demo_registry.hospitals(dataset.hospitals):
            await registry.add(session, entry, replace=True)
        await demo_data.clear_certifications(session)
        for c in demo_registry.certifications(datetime.now(SHANGHAI).date()):
            await registry.certify(session, c, reference="demo")
        known = await registry.signing_keys(session)
        for hid, (key_id, private) in signers.items():
            if (hid, key_id) not in known:
                await registry.add_key(session, hid, key_id, public_key_b64(private))
    return signers


FORGED_KEY_ID = "H001-unregistered"


def _with_forgeries(dataset: DemoDataset) -> DemoDataset:
    """Two more bad messages: one altered after signing, one signed with an unknown key."""
    valid = next(m for m in dataset.messages if m.expect == "indexed" and m.hospital == "H001")
    tampered = replace(
        valid,
        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "mrb-demo-tampered")),
        expect="rejected",
        expect_code="BAD_SIGNATURE",
        note="altered after signing",
    )
    unknown = replace(
        valid,
        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "mrb-demo-unknown-key")),
        expect="rejected",
        expect_code="UNKNOWN_KEY",
        note="signed with an unregistered key",
    )
    return replace(dataset, messages=(*dataset.messages, tampered, unknown))


async def _publish(
    stack: Stack, dataset: DemoDataset, signers: dict[str, Signer], console: Console
) -> tuple[dict[str, Receipt], float]:
    """Through the adapters' own path: outbox (durable, sealed), signed send, receipts."""
    bootstrap = stack.container.kafka_bootstrap
    if bootstrap is None:
        raise RuntimeError("the demo needs Kafka: embedded or MRB_KAFKA_BOOTSTRAP")
    settings = stack.container.settings
    path = settings.data_dir / "demo-outbox.db"
    for stale in settings.data_dir.glob("demo-outbox.db*"):
        stale.unlink()
    box = Outbox(path, load_or_create_key(settings.keys_dir / "outbox.key"))
    try:
        box.add((_envelope(m, signers), m.note) for m in dataset.messages)
        started = time.perf_counter()
        with Progress(console=console) as progress:
            task = progress.add_task("publishing and indexing", total=len(dataset.messages))
            report = await deliver(
                box,
                bootstrap,
                # Embedded: the adapters share the broker's data dir, so they trust the
                # receipt key its worker published there (docs/security.md).
                trust=ReceiptTrust.configured(file=settings.keys_dir / RECEIPT_KEYS_FILE),
                options=settings.kafka_options(),
                timeout=300,
                progress=lambda done, total: progress.update(task, completed=done),
            )
        return report.receipts, time.perf_counter() - started
    finally:
        box.close()


def _envelope(m: DemoMessage, signers: dict[str, Signer]) -> OutgoingMessage:
    """Signed by the hospital's adapter key, as `mrb adapter fhir` does."""
    out = OutgoingMessage(
        hospital=m.hospital,
        value=m.value,
        key=m.key,
        message_id=m.message_id,
        content_type=m.content_type,
    )
    if m.hospital not in signers:  # the unregistered hospital: nobody to sign for it
        return out
    key_id, private = signers[m.hospital]
    if m.expect_code == "UNKNOWN_KEY":
        return out.signed(FORGED_KEY_ID, Ed25519PrivateKey.generate())
    signed = out.signed(key_id, private)
    if m.expect_code == "BAD_SIGNATURE":
        return replace(signed, value=m.value.replace(b'"final"', b'"amended"', 1))
    return signed


async def _summary(
    stack: Stack,
    dataset: DemoDataset,
    receipts: dict[str, Receipt],
    seconds: float,
    console: Console,
) -> list[DemoCheck]:
    async with stack.container.sessions() as session:
        size = await demo_data.index_size(session)
    outcomes = Counter(r.outcome for r in receipts.values())
    console.print(
        f"\n[bold green]indexed[/bold green]: {outcomes['indexed']} messages "
        f"({outcomes['duplicate']} duplicates, {outcomes['rejected']} rejected) → "
        f"{size.results} results, {size.versions} versions, {size.items} indexed items, "
        f"{size.people} people, {len(dataset.hospitals)} hospitals"
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
    counts, checks = await _showcase(stack, dataset, console)
    console.print(
        "decisions over all sample checks: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    return checks


async def _outcomes(
    stack: Stack, checks: list[DemoCheck], signers: dict[str, Signer], console: Console
) -> None:
    """Doctors answer the checks; one recognised report is then withdrawn; finance reports."""
    accepted = await demo_outcomes.record_outcomes(stack, checks)
    console.print(
        f"\n[bold]Outcomes[/bold]: doctors accepted {len(accepted)} recognisable items and "
        "declined the rest with the regulation's reasons (POST /api/v1/recognition/{id}/outcome)"
    )
    withdrawn = await demo_outcomes.withdraw_one(stack, accepted, signers, console)
    if withdrawn is not None:
        await demo_outcomes.show_notice(stack, withdrawn, console)
    await demo_outcomes.show_reports(stack, console)
    console.print(
        "API calls need a bearer token: "
        "`mrb token issue --role doctor --hospital H001 --subject dr.li` (hospital roles: "
        "adapter, doctor, finance, admin; platform roles: platform-admin, security-admin, "
        "audit, qc, platform-finance). Web pages: sign in at "
        f"{stack.api_url}/login with these demo accounts (`mrb user add` makes others):"
    )
    notified = withdrawn.hospital if withdrawn else "H001"
    for username, role, hospital in (
        (demo_outcomes.doctor(notified), Role.DOCTOR, notified),
        ("finance.demo", Role.PLATFORM_FINANCE, None),
        ("admin.demo", Role.PLATFORM_ADMIN, None),  # the admin page: registry, worklists
        ("security.demo", Role.SECURITY_ADMIN, None),  # the admin page: users and roles
    ):
        password = await _demo_account(stack, username, role, hospital)
        console.print(
            f"  {role.value} ({hospital or 'all hospitals'}): username {username}  "
            f"password {password}",
            soft_wrap=True,
            highlight=False,
        )


async def _demo_account(stack: Stack, username: str, role: Role, hospital: str | None) -> str:
    """A local demo account with a fresh random password (printed once by the caller)."""
    from broker.security.passwords import generate_password
    from broker.services import users as user_service

    by = Actor(demo_outcomes.DEMO_ISSUER, Role.SECURITY_ADMIN, ALL_HOSPITALS)
    password = generate_password()
    try:
        await user_service.add_account(
            stack.container.web_uow(),
            by,
            username=username,
            password=password,
            role=role,
            hospital=hospital,
        )
    except ValueError:  # a demo run before on this data folder: a new password
        await user_service.reset_password(
            stack.container.web_uow(), by, username=username, password=password, enable=True
        )
    return password


SNOMED = "http://snomed.info/sct"
THORAX, KNEE, ABDOMEN, LEFT = "51185008", "72696002", "818983003", "7771000"
SHOWCASE_ITEMS: list[dict[str, object]] = [
    {"system": "http://loinc.org", "code": "58410-2"},  # complete blood count (panel)
    {"system": "http://loinc.org", "code": "718-7"},  # haemoglobin
    {"system": "http://loinc.org", "code": "4548-4"},  # HbA1c
    {"system": "http://loinc.org", "code": "2345-7"},  # glucose
    {"system": "http://loinc.org", "code": "1742-6"},  # ALT
    {"system": "http://loinc.org", "code": "2160-0"},  # creatinine
    {"system": "http://loinc.org", "code": "2093-3"},  # cholesterol
    {"system": "http://loinc.org", "code": "3016-3"},  # TSH
    {"system": "http://loinc.org", "code": "2951-2"},  # sodium
    {"system": "http://loinc.org", "code": "5902-2"},  # prothrombin time
    {"system": "http://loinc.org", "code": "5196-1"},  # HBsAg
    {"system": "http://loinc.org", "code": "2039-6"},  # CEA
    {"system": "http://loinc.org", "code": "1834-1"},  # AFP
    {"modality": "CT", "body_site": {"system": SNOMED, "code": "69536005"}},  # CT head
    {"modality": "MR", "body_site": {"system": SNOMED, "code": "12738006"}},  # MR brain
    {
        "modality": "MR",
        "body_site": {"system": SNOMED, "code": KNEE},
        "laterality": {"system": SNOMED, "code": "24028007"},
    },  # MR right knee
    {"modality": "CT", "body_site": {"system": SNOMED, "code": THORAX}},
    {"modality": "CT", "body_site": {"system": SNOMED, "code": THORAX}, "contrast": True},
    {"modality": "DR", "body_site": {"system": SNOMED, "code": THORAX}},
    {
        "modality": "MR",
        "body_site": {"system": SNOMED, "code": KNEE},
        "laterality": {"system": SNOMED, "code": LEFT},
    },
    {"modality": "US", "body_site": {"system": SNOMED, "code": ABDOMEN}},
    {"system": "http://loinc.org", "code": "30934-4"},  # BNP: on the negative list
    {"system": "http://loinc.org", "code": "94500-6"},  # not in the catalog
]


async def _showcase(
    stack: Stack, dataset: DemoDataset, console: Console
) -> tuple[dict[str, int], list[DemoCheck]]:
    """Ask the API, as doctors at H001-H003 would, until every decision has an example."""
    examples: dict[str, tuple[dict[str, object], dict[str, Any]]] = {}
    counts: Counter[str] = Counter()
    checks: list[DemoCheck] = []
    ordering_sites = [h.id for h in dataset.hospitals][:3]
    clients = {
        h: await demo_outcomes.client(stack, Role.DOCTOR, h, demo_outcomes.doctor(h))
        for h in ordering_sites
    }
    try:
        for i, patient in enumerate(dataset.patients):
            hospital = ordering_sites[i % len(ordering_sites)]
            body: dict[str, object] = {
                "patient": {"system": NATIONAL_ID_SYSTEM, "value": patient.national_id},
                "ordering_hospital": hospital,
                "order_time": datetime.now(SHANGHAI).isoformat(timespec="seconds"),
                "items": SHOWCASE_ITEMS,
            }
            response = await clients[hospital].post("/api/v1/recognition/check", json=body)
            if response.status_code != 200:
                console.print(f"[red]check failed: {response.status_code} {response.text}[/red]")
                return dict(counts), checks
            answer = response.json()
            checks.append(DemoCheck(answer["check_id"], hospital, answer["items"]))
            for item in answer["items"]:
                counts[item["decision"]] += 1
                interesting = item["candidate"] is not None or item["decision"] in (
                    "NOT_IN_CATALOG",
                    "EXCLUDED",
                    "NO_PRIOR_RESULT",
                )
                if interesting and item["decision"] not in examples:
                    examples[item["decision"]] = (body, item)
    finally:
        for c in clients.values():
            await c.aclose()
    table = Table(
        "decision",
        "ordered at",
        "item",
        "prior result",
        "explanation",
        title="Recognition decisions from the sample (one example of each)",
    )
    for decision in DECISIONS:
        if decision not in examples:
            table.add_row(decision, "-", "-", "-", "[yellow]no example in this sample[/yellow]")
            continue
        body, item = examples[decision]
        cand = item["candidate"]
        seen = f"{cand['hospital']} {_local_day(cand['effective'])}" if cand else "-"
        fee = f" (¥{item['fee_saved']} saved)" if item["fee_saved"] else ""
        table.add_row(
            decision,
            str(body["ordering_hospital"]),
            item["name"]["en"],
            seen,
            item["explanation"]["en"] + fee,
        )
    console.print(table)
    if "RECOGNIZABLE" in examples:
        body, item = examples["RECOGNIZABLE"]
        console.print(f"中文说明：{item['explanation']['zh']}")
        one = {**body, "items": [item["requested"]]}
        console.print("Try it yourself (a doctor's token for the ordering hospital):")
        console.print(
            f"  TOKEN=$(MRB_DATA_DIR={stack.container.settings.data_dir} .venv/bin/mrb token "
            f"issue --role doctor --hospital {body['ordering_hospital']} --subject dr.you)\n"
            f"  curl -s -X POST {stack.api_url}/api/v1/recognition/check "
            '-H "Authorization: Bearer $TOKEN" '
            f"-H 'content-type: application/json' -d '{json.dumps(one, ensure_ascii=False)}'",
            soft_wrap=True,
        )
    return dict(counts), checks


async def _rules_v2_story(stack: Stack, story: scenarios.Scenarios, console: Console) -> None:
    """The four rules v2 cases, each answered by a real check on what the demo ingested."""
    table = Table("case", "decision", "what the doctor is told", title="Rules v2 at work")
    client = await demo_outcomes.client(
        stack, Role.DOCTOR, scenarios.ORDERING, demo_outcomes.doctor(scenarios.ORDERING)
    )
    try:
        for case in story.checks:
            body = {
                "patient": {"system": NATIONAL_ID_SYSTEM, "value": case.national_id},
                "ordering_hospital": scenarios.ORDERING,
                "order_time": datetime.now(SHANGHAI).isoformat(timespec="seconds"),
                "items": [case.item],
            }
            response = await client.post("/api/v1/recognition/check", json=body)
            if response.status_code != 200:
                console.print(f"[red]check failed: {response.status_code} {response.text}[/red]")
                return
            (item,) = response.json()["items"]
            said = " ".join(
                [item["explanation"]["en"], *(w["message"]["en"] for w in item["warnings"])]
            )
            ok = item["decision"] == case.decision and case.shows in said
            mark = "" if ok else f" [red](expected {case.decision}: rules v2 story broken)[/red]"
            table.add_row(case.name, item["decision"] + mark, said)
    finally:
        await client.aclose()
    console.print(table)


def _local_day(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.fromisoformat(iso).astimezone(SHANGHAI).date().isoformat()


DECISIONS = (
    "RECOGNIZABLE",
    "NO_PRIOR_RESULT",
    "NOT_IN_CATALOG",
    "EXPIRED",
    "NOT_QC_CERTIFIED",
    "OUT_OF_SCOPE",
    "PRELIMINARY",
    "WITHDRAWN",
    "EXCLUDED",
)
