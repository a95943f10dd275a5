"""`mrb adapter hl7v2`: an MLLP listener, or files of HL7 v2 messages, into the outbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo

from adapters.common.delivery import DeliveryReport, deliver_continuously
from adapters.common.outbox import Outbox
from adapters.common.publishing import Delivery, delivered_counts, publish, refused_line
from adapters.common.receipts import ReceiptTrust
from adapters.common.site import ListenerBusy, Site, console, stop_on_signals
from adapters.common.wiring import (
    ListenerOptions,
    Listening,
    fail,
    host_port,
    listening,
    open_outbox,
    receipt_trust,
    signer,
)
from adapters.fhir.source import iter_paths
from adapters.hl7v2.app_acks import ApplicationAcks
from adapters.hl7v2.batch import split_messages
from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.intake import Intake, accept, reject_oversize
from adapters.hl7v2.mllp import Oversize, serve_mllp


@dataclass(frozen=True)
class Interface:
    """How this LIS writes its messages (`InterfaceConfig`, from the command's options)."""

    zone: str = "Asia/Shanghai"
    charset: str = "utf-8"  # when MSH-18 is empty
    mark_field: str | None = None  # the field carrying the 互认标识, e.g. OBR-46
    obx_without_sub_id: bool = False


def run(
    site: Site,
    hospital: str,
    *,
    paths: list[Path],
    listener: ListenerOptions | None,
    ack_to: str | None,
    interface: Interface,
    delivery: Delivery,
    receipt_key: list[str] | None,
) -> None:
    """Listen for MLLP (`listener`), or publish the messages in PATHS."""
    # Checked first: a bad access setting stops the command before anything is opened.
    where = listening(site, listener) if listener else None
    sign = signer(site, hospital)
    trust = receipt_trust(site, receipt_key)
    try:
        config = InterfaceConfig(
            zone=ZoneInfo(interface.zone),
            fallback_encoding=interface.charset,
            recognition_mark_field=interface.mark_field,
            obx_without_sub_id=interface.obx_without_sub_id,
        )
    except (LookupError, ValueError) as exc:
        raise fail(str(exc)) from None
    outbox = open_outbox(site)
    intake = Intake(outbox, sign, config)
    if where is not None:
        try:
            target = host_port(ack_to, "--ack-to") if ack_to else None
            site.start_logging()  # per-connection lines
            with site.metrics():
                asyncio.run(_listen(site, intake, where, target, trust))
        finally:
            outbox.close()
        return
    outbox.close()
    if not paths:
        raise fail("give files of HL7 v2 messages, or --listen HOST:PORT")

    def enqueue(box: Outbox) -> tuple[int, int]:
        queued = problems = 0
        feed = replace(intake, outbox=box)
        for path in iter_paths(paths, suffixes=None):
            for n, raw in enumerate(split_messages(path.read_bytes()), 1):
                accepted = accept(raw, feed, origin=f"{path}:{n}")
                queued += len(accepted.message_ids)
                if accepted.error is not None:
                    problems += 1
                    console.print(
                        f"  [yellow]{accepted.error.code}[/yellow] {path}:{n}: "
                        f"{accepted.error.detail}"
                    )
        return queued, problems

    publish(site, hospital, enqueue, delivery, trust)


async def _listen(
    site: Site,
    intake: Intake,
    where: Listening,
    ack_to: tuple[str, int] | None,
    trust: ReceiptTrust,
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    acks = ApplicationAcks(ack_to)

    async def handle(raw: bytes) -> bytes | None:
        accepted = accept(raw, intake)
        acks.expect(accepted)
        return accepted.ack

    async def oversize(item: Oversize) -> bytes | None:
        return await reject_oversize(item, intake)

    try:
        server = await serve_mllp(
            where.host,
            where.port,
            handle,
            on_oversize=oversize,
            peers=where.peers,
            tls=where.tls.context() if where.tls else None,
        )
    except OSError as exc:
        raise ListenerBusy(where.host, where.port, "--listen", exc.strerror or str(exc)) from None
    port = server.sockets[0].getsockname()[1]
    console.print(
        f"MLLP listener for {intake.hospital} on {where.host}:{port}, {where.access_text()}"
        + (f", application ACKs to {ack_to[0]}:{ack_to[1]}" if ack_to else "")
        + f"; publishing to {site.bootstrap}. Ctrl-C stops."
    )

    async def on_report(report: DeliveryReport) -> None:
        await acks.send(report.receipts)
        counts = delivered_counts(report)
        if counts:
            console.print(f"delivered: {counts}")
        refused_line(report)

    try:
        await deliver_continuously(
            intake.outbox,
            site.bootstrap,
            stop,
            trust=trust,
            hospital=intake.hospital,
            options=site.kafka_options(),
            on_report=on_report,
        )
    finally:
        server.close()
        await server.wait_closed()
        console.print("stopped; undelivered messages stay in the outbox for the next run")
