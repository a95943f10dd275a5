"""`mrb adapter fhir`: publish FHIR files, or poll a hospital FHIR server, through the
outbox. The broker-side check of each message (`check`) comes from the caller."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.common.envelope import Signer
from adapters.common.publishing import (
    Delivery,
    Validator,
    deliver_showing_progress,
    print_report,
    publish,
    signed,
)
from adapters.common.receipts import ReceiptTrust
from adapters.common.site import Site, Stop, console, stop_on_signals
from adapters.common.wiring import fail, open_outbox, receipt_trust, signer
from adapters.fhir.poll import DEFAULT_MAX_PAGES, Cursor, PollError, Search
from adapters.fhir.source import read_items


@dataclass(frozen=True)
class PollOptions:
    """`--poll BASE`: the server, how often, how far per poll, and its bearer token."""

    base: str
    interval: float = 0.0  # seconds between polls; 0: poll once
    max_pages: int = DEFAULT_MAX_PAGES
    token: str | None = None  # MRB_FHIR_SOURCE_TOKEN


def run(
    site: Site,
    hospital: str,
    *,
    paths: list[Path],
    poll: PollOptions | None,
    check: Validator | None,
    delivery: Delivery,
    receipt_key: list[str] | None,
) -> None:
    """Publish PATHS (files, NDJSON, folders), or poll; what is still pending otherwise."""
    trust = receipt_trust(site, receipt_key)
    if poll is not None:
        sign = signer(site, hospital)
        site.start_logging()
        with site.metrics():
            asyncio.run(_poll(site, sign, poll, check, delivery, trust))
        return
    try:
        items = list(read_items(paths))
    except (FileNotFoundError, OSError) as exc:
        raise fail(str(exc)) from None
    if paths and not items:
        console.print("[yellow]no .json or .ndjson files found[/yellow]")
        raise Stop(1)
    sign = signer(site, hospital)
    values = [(i.value, i.origin) for i in items]
    publish(site, hospital, signed(sign, values, check), delivery, trust)


async def _poll(
    site: Site,
    sign: Signer,
    options: PollOptions,
    check: Validator | None,
    delivery: Delivery,
    trust: ReceiptTrust,
) -> None:
    """Poll until done (interval 0) or stopped: SIGTERM/SIGINT finish the page being read,
    queue what was read, keep the cursor and return (exit 0)."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    base = options.base
    name = hashlib.sha256(base.encode()).hexdigest()[:12]
    cursor = Cursor(site.data_dir / f"fhir-poll-{name}.json")
    outbox = open_outbox(site)
    try:
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as client:
            while True:
                since = cursor.read()
                search = Search(
                    client, base, since, token=options.token, max_pages=options.max_pages
                )
                values: list[tuple[bytes, str]] = []
                newest, in_order = since, True
                async for page in search.pages():
                    for item in page:
                        values.append((item.value, f"{base}/DiagnosticReport/{item.report_id}"))
                        if item.last_updated:
                            in_order = in_order and (newest is None or item.last_updated >= newest)
                            newest = max(newest or item.last_updated, item.last_updated)
                    if stop.is_set():
                        break  # the page is in: stop before asking for the next
                queued, problems = signed(sign, values, check)(outbox)
                # After the outbox holds them: nothing skipped. A run cut short moves the
                # cursor only when the server sent its pages in lastUpdated order.
                moved = bool(newest and newest != since and (not search.more or in_order))
                if moved and newest:
                    cursor.write(newest)
                console.print(
                    f"polled {base} since {since or 'the beginning'}: {len(values)} report(s), "
                    f"{queued} queued, {problems} refused"
                )
                if search.more and not stop.is_set():
                    if not moved:
                        raise fail(
                            f"stopped after {search.pages_read} page(s) (--max-pages) without "
                            "moving the cursor; raise --max-pages",
                            1,
                        )
                    console.print(
                        f"[yellow]stopped after {search.pages_read} page(s) (--max-pages); "
                        f"the next poll goes on from {newest}[/yellow]"
                    )
                if stop.is_set():
                    _stopped(cursor)
                    return
                round_ = asyncio.ensure_future(
                    deliver_showing_progress(outbox, site, sign.hospital, delivery, trust)
                )
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({round_, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not round_.done():
                    round_.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await round_
                    _stopped(cursor)
                    return
                report = round_.result()
                print_report(outbox, report, queued, sign.hospital)
                if options.interval <= 0 or stop.is_set():
                    rejected = any(r.outcome == "rejected" for r in report.receipts.values())
                    if problems or report.pending or rejected:
                        raise Stop(1)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), options.interval)
                if stop.is_set():
                    _stopped(cursor)
                    return
    except (httpx.HTTPError, PollError) as exc:
        raise fail(f"polling {base} failed: {exc}", 1) from None
    finally:
        outbox.close()


def _stopped(cursor: Cursor) -> None:
    console.print(
        f"stopped: the cursor stays at {cursor.read() or 'the beginning'}; what was read "
        "is in the outbox and is sent on the next run"
    )
