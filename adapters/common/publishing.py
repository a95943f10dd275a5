"""Publishing a batch: sign and store in the outbox, deliver, say what happened.

Shared by every adapter's file or folder mode and by the FHIR poller; the listeners use
`refused_line` for their running reports.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from rich.progress import Progress

from adapters.common.delivery import DeliveryReport, deliver
from adapters.common.envelope import Signer
from adapters.common.outbox import REJECTED, Outbox
from adapters.common.receipts import ReceiptTrust
from adapters.common.site import Site, Stop, console
from adapters.common.wiring import fail, open_outbox
from adapters.fhir.source import patient_hint


class Problem(Protocol):
    """Why the broker would refuse a message: its DLQ code and a detail."""

    @property
    def code(self) -> str: ...

    @property
    def detail(self) -> str: ...


# Returns why the broker would refuse a message (None: it would be accepted).
Validator = Callable[[bytes], Problem | None]

# Puts messages in the outbox: (how many were queued, how many inputs were unusable).
Enqueue = Callable[[Outbox], tuple[int, int]]


@dataclass(frozen=True)
class Delivery:
    """How long a batch run waits for receipts, and when it sends a message again."""

    timeout: float = 60.0
    resend_after: float = 30.0


def signed(
    signer: Signer, values: list[tuple[bytes, str]], check: Validator | None = None
) -> Enqueue:
    """Queue the values the broker would accept; report the others here, unsent."""

    def enqueue(box: Outbox) -> tuple[int, int]:
        good: list[tuple[bytes, str]] = []
        for value, origin in values:
            refused = check(value) if check else None
            if refused is None:
                good.append((value, origin))
            else:
                console.print(f"  [red]{refused.code}[/red] {origin}: {refused.detail}")
        queued = box.add((signer.message(v, patient_hint(v)), o) for v, o in good)
        return queued, len(values) - len(good)

    return enqueue


def publish(
    site: Site,
    hospital: str,
    enqueue: Enqueue,
    delivery: Delivery,
    trust: ReceiptTrust,
) -> None:
    """Store in the outbox, deliver, report; exit 1 on rejections, leftovers or problems."""
    outbox = open_outbox(site)
    try:
        queued, problems = enqueue(outbox)
        report = asyncio.run(deliver_showing_progress(outbox, site, hospital, delivery, trust))
        print_report(outbox, report, queued, hospital)
    except sqlite3.Error as exc:  # a full or failing disk: Kafka is not the problem
        raise fail(
            f"the adapter outbox {site.outbox_file} could not be written ({exc}): this run's "
            "files were not queued; free space and run again",
            1,
        ) from None
    except Exception as exc:
        raise fail(
            f"{exc}. Messages stay in the outbox; run again when Kafka at {site.bootstrap} "
            "is reachable.",
            1,
        ) from None
    finally:
        outbox.close()
    if problems or report.pending or any(r.outcome == "rejected" for r in report.receipts.values()):
        raise Stop(1)


async def deliver_showing_progress(
    outbox: Outbox, site: Site, hospital: str, delivery: Delivery, trust: ReceiptTrust
) -> DeliveryReport:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("delivering", total=None)
        return await deliver(
            outbox,
            site.bootstrap,
            trust=trust,
            hospital=hospital,
            options=site.kafka_options(),
            resend_after=timedelta(seconds=delivery.resend_after),
            timeout=delivery.timeout,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def print_report(outbox: Outbox, report: DeliveryReport, queued: int, hospital: str) -> None:
    console.print(
        f"queued {queued} message(s) as {hospital}; sent {report.sent}, resent {report.resent}"
    )
    counts = Counter(r.outcome for r in report.receipts.values())
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no receipts")
    rejected = {s.message_id: s for s in outbox.listing(REJECTED, hospital, limit=10_000)}
    for mid in report.receipts:
        if mid in rejected:
            s = rejected[mid]
            console.print(f"  [red]{s.error_code}[/red] {s.origin}: {s.error_detail}")
    refused_line(report)
    if report.pending:
        console.print(
            f"[yellow]{len(report.pending)} message(s) still pending[/yellow]: kept in the "
            "outbox and sent again on the next run"
        )


def delivered_counts(report: DeliveryReport) -> str:
    """`indexed 3, rejected 1`: the receipts of one round of a listener's delivery."""
    counts = Counter(r.outcome for r in report.receipts.values())
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def refused_line(report: DeliveryReport) -> None:
    """Receipts not believed in this delivery, by reason (details: `mrb adapter status`)."""
    if report.refused:
        reasons = Counter(r.reason for r in report.refused)
        console.print(
            f"[red]{len(report.refused)} receipt(s) refused[/red] ("
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            + "): not signed by a trusted broker receipt key for this hospital; those "
            "messages stay in the outbox and are resent (see `mrb adapter status`)"
        )
