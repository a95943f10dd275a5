"""`mrb adapter dicom`: a DICOM Storage SCP, or folders of DICOM files, into the outbox
(headers only, never pixels)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.progress import Progress

from adapters.common.delivery import DeliveryReport, deliver_continuously
from adapters.common.envelope import Signer
from adapters.common.publishing import Delivery, delivered_counts, publish, refused_line, signed
from adapters.common.receipts import ReceiptTrust
from adapters.common.site import ListenerBusy, Site, console, stop_on_signals
from adapters.common.wiring import (
    ListenerOptions,
    access_text,
    fail,
    listening,
    open_outbox,
    receipt_trust,
    signer,
)
from adapters.dicom.bundle import BundleOptions
from adapters.dicom.folder import read_folder
from adapters.dicom.scp import ScpSettings, start_scp
from adapters.dicom.service import DicomAdapter
from adapters.dicom.spool import Spool

SPOOL_FILE = "dicom-spool.db"


@dataclass(frozen=True)
class Receiver:
    """The SCP's own options besides where it listens and who may connect."""

    ae_title: str = "MRB"
    allow_calling_aet: tuple[str, ...] = ()  # as given: repeated, or comma/space separated
    quiet_seconds: float = 5.0  # publish a study after this long without new instances


def run(
    site: Site,
    hospital: str,
    *,
    paths: list[Path],
    listener: ListenerOptions | None,
    receiver: Receiver,
    wado_rs: str | None,
    charset: str | None,
    zone: str,
    delivery: Delivery,
    receipt_key: list[str] | None,
) -> None:
    """Receive C-STORE (`listener`), or read the folders in PATHS, and publish studies."""
    where = listening(site, listener) if listener else None
    sign = signer(site, hospital)
    trust = receipt_trust(site, receipt_key)
    options = BundleOptions(hospital=hospital, wado_rs_base=wado_rs)
    if where is not None:
        scp = ScpSettings(
            host=where.host,
            port=where.port,
            ae_title=receiver.ae_title,
            fallback_charset=charset,
            allowed_peers=tuple(str(n) for n in where.peers.networks),
            allowed_calling_ae_titles=tuple(
                t for item in receiver.allow_calling_aet for t in item.replace(",", " ").split()
            ),
            tls=where.tls,
        )
        site.start_logging()  # per-connection lines
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # ours say who and why
        with site.metrics():
            asyncio.run(
                _listen(site, options, sign, scp, ZoneInfo(zone), receiver.quiet_seconds, trust)
            )
        return
    if not paths:
        raise fail("give DICOM files or folders, or --listen HOST:PORT")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("reading DICOM headers", total=None)
        result = read_folder(
            paths,
            options=options,
            zone=ZoneInfo(zone),
            fallback_charset=charset,
            on_file=lambda _: progress.advance(task),
        )
    for p in result.problems:
        console.print(f"  [yellow]{p.code}[/yellow] {p.path}: {p.detail}")
    console.print(
        f"read {result.files} file(s): {len(result.bundles)} stud(ies), "
        f"{len(result.problems)} file(s) not usable"
    )
    values = [
        (b.value, f"dicom study {b.number_of_series} series, {b.number_of_instances} instances")
        for b in result.bundles
    ]
    enqueue = signed(sign, values)
    publish(site, hospital, lambda box: (enqueue(box)[0], len(result.problems)), delivery, trust)


async def _listen(
    site: Site,
    options: BundleOptions,
    sign: Signer,
    scp_settings: ScpSettings,
    zone: ZoneInfo,
    quiet_seconds: float,
    trust: ReceiptTrust,
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    outbox = open_outbox(site)
    spool = Spool(site.data_dir / SPOOL_FILE, site.outbox_key())
    adapter = DicomAdapter(
        options=options,
        outbox=outbox,
        spool=spool,
        signer=sign,
        loop=asyncio.get_running_loop(),
        quiet_seconds=quiet_seconds,
    )
    restored = adapter.restore()
    try:
        scp = start_scp(
            scp_settings, adapter.on_instance, zone=zone, loop=asyncio.get_running_loop()
        )
    except (ValueError, OSError) as exc:  # an AE title pynetdicom refuses; a busy port
        outbox.close()
        spool.close()
        if isinstance(exc, OSError):  # taken since the check at start
            reason = exc.strerror or str(exc)
            raise ListenerBusy(scp_settings.host, scp_settings.port, "--listen", reason) from None
        raise fail(str(exc)) from None
    adapter.collector.start()
    calling = ", ".join(scp_settings.allowed_calling_ae_titles) or "any"
    console.print(
        f"DICOM receiver {scp_settings.ae_title} on {scp_settings.host}:{scp.port} for "
        f"{options.hospital}, {access_text(scp.peers, scp_settings.tls)}, calling AE titles: "
        f"{calling} ({restored} spooled instance(s) restored); publishing to "
        f"{site.bootstrap}. Ctrl-C stops."
    )

    def on_report(report: DeliveryReport) -> None:
        counts = delivered_counts(report)
        if counts:
            console.print(f"delivered: {counts} (studies published so far: {adapter.published})")
        refused_line(report)

    try:
        await deliver_continuously(
            outbox,
            site.bootstrap,
            stop,
            trust=trust,
            hospital=options.hospital,
            options=site.kafka_options(),
            resend_after=timedelta(seconds=30),
            on_report=on_report,
        )
    finally:
        scp.stop()
        # Pending studies go to the outbox, not lost. Off the loop: the collector's thread
        # may be handing a study to this loop right now, and joining it here would wait
        # for itself (up to the sink's 60 s timeout).
        await asyncio.to_thread(adapter.collector.stop, flush=True)
        outbox.close()
        spool.close()
        console.print("stopped; undelivered messages stay in the outbox for the next run")
