"""`mrb adapter fhir|dicom|status`: publish through the outbox; see what happened."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, NoReturn
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from adapters.common.delivery import DeliveryReport, deliver, deliver_continuously
from adapters.common.envelope import Signer
from adapters.common.metrics import outbox_registry
from adapters.common.outbox import DELIVERED, PENDING, REJECTED, Outbox
from adapters.common.peers import PeerAllowlist, TlsFiles
from adapters.common.receipts import ENV_SETTING, RECEIPT_KEYS_FILE, ReceiptKeyError, ReceiptTrust
from adapters.common.signing import SigningKeyMissing, current_key
from adapters.dicom.bundle import BundleOptions
from adapters.dicom.folder import read_folder
from adapters.dicom.scp import ScpSettings, start_scp
from adapters.dicom.service import DicomAdapter
from adapters.dicom.spool import Spool
from adapters.fhir.poll import DEFAULT_MAX_PAGES, Cursor, PollError, Search
from adapters.fhir.source import iter_paths, patient_hint, read_items
from adapters.hl7v2.app_acks import ApplicationAcks
from adapters.hl7v2.batch import split_messages
from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.intake import Intake, accept, reject_oversize
from adapters.hl7v2.mllp import Oversize, serve_mllp
from broker.domain.rejections import Rejected
from broker.ingest.parse import parse_message
from broker.instance import Listener, PortInUse, ensure_free
from broker.observability import configure_logging, start_metrics_server
from broker.runtime import install_signal_handlers
from broker.security.keys import load_or_create_key
from broker.settings import Settings

app = typer.Typer(help="Hospital-side adapters.", no_args_is_help=True)
console = Console(soft_wrap=True)


def bootstrap_of(settings: Settings) -> str:
    """MRB_KAFKA_BOOTSTRAP, else the embedded broker that `mrb up`/`mrb demo` runs."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_kafka_port}"


OUTBOX_FILE = "adapter-outbox.db"


def open_outbox(settings: Settings) -> Outbox:
    """The adapter's outbox in MRB_DATA_DIR (sealed with an adapter-local key)."""
    key = load_or_create_key(settings.keys_dir / "outbox.key")
    path = settings.data_dir / OUTBOX_FILE
    try:
        return Outbox(path, key)
    except (sqlite3.Error, OSError) as exc:  # a damaged file or disk: nothing is accepted
        console.print(
            f"[red]error:[/red] the adapter outbox {path} cannot be used ({exc}): nothing was "
            "accepted or sent. Move the file aside (keep it: it may hold messages not yet "
            "delivered) and run again to start a new one"
        )
        raise typer.Exit(1) from None


@contextlib.contextmanager
def adapter_metrics(settings: Settings) -> Iterator[None]:
    """While a long-running adapter runs: its outbox's metrics on MRB_METRICS_HOST:
    MRB_ADAPTER_METRICS_PORT (0: off). A busy port: one line, exit 2."""
    port = settings.adapter_metrics_port
    if not port:
        yield
        return
    try:
        server = start_metrics_server(
            settings.metrics_host,
            port,
            registry=outbox_registry(settings.data_dir / OUTBOX_FILE),
            setting="MRB_ADAPTER_METRICS_PORT",
        )
    except PortInUse as exc:
        _port_in_use(exc)
    console.print(f"outbox metrics on http://{settings.metrics_host}:{port}/metrics")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


ReceiptKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--receipt-key",
        envvar=ENV_SETTING,
        help="The broker's receipt public key as KID=BASE64 (`mrb keys show-receipt-key` at "
        "the broker); repeat, or separate with commas, to trust several during a rotation. "
        f"Also trusted: the keys in MRB_DATA_DIR/keys/{RECEIPT_KEYS_FILE}. Only receipts "
        "signed with a trusted key settle the outbox.",
    ),
]


def receipt_trust(
    settings: Settings, receipt_key: list[str] | None, *, warn: bool = True
) -> ReceiptTrust:
    """The broker receipt keys this adapter trusts; exit 2 on a malformed one. With none,
    a warning: receipts are refused, so messages stay pending (the secure default)."""
    try:
        trust = ReceiptTrust.configured(receipt_key or (), settings.keys_dir / RECEIPT_KEYS_FILE)
    except ReceiptKeyError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not trust and warn:
        console.print(f"[yellow]warning:[/yellow] {_NO_RECEIPT_KEY}")
    return trust


_NO_RECEIPT_KEY = (
    f"no broker receipt key is configured ({ENV_SETTING}=KID=BASE64, --receipt-key, or the "
    f"broker's {RECEIPT_KEYS_FILE} in MRB_DATA_DIR/keys; `mrb keys show-receipt-key` at the "
    "broker prints it). Every receipt is refused until then: messages are sent but stay "
    "pending in the outbox and are resent."
)


@app.command("fhir")
def fhir(
    hospital: Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="JSON/NDJSON files or directories.")
    ] = None,
    poll: Annotated[
        str | None,
        typer.Option(help="A FHIR server base URL to poll for new DiagnosticReports."),
    ] = None,
    interval: Annotated[
        float, typer.Option(help="With --poll: seconds between polls (0: poll once).")
    ] = 0.0,
    max_pages: Annotated[
        int,
        typer.Option(min=1, help="With --poll: at most this many search pages per poll."),
    ] = DEFAULT_MAX_PAGES,
    validate: Annotated[
        bool, typer.Option(help="Check each message as the broker will, before sending.")
    ] = True,
    zone: Annotated[str, typer.Option(help="The hospital's time zone.")] = "Asia/Shanghai",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for receipts.")] = 60.0,
    resend_after: Annotated[
        float, typer.Option(help="Seconds without a receipt before sending again.")
    ] = 30.0,
    receipt_key: ReceiptKeys = None,
) -> None:
    """Publish FHIR R4 as HOSPITAL: stored in the outbox, signed, sent, receipted.

    PATHS are JSON files (a Bundle or a resource), NDJSON (one per line) or directories.
    --poll reads a hospital FHIR server's DiagnosticReport search by _lastUpdated (the
    bearer token, if the server needs one, from MRB_FHIR_SOURCE_TOKEN), following only
    `next` links on that same server, at most --max-pages pages per poll; SIGTERM or
    Ctrl-C ends it after the page being read (exit 0, the cursor kept). Messages the
    broker would refuse are reported here and not sent. Without PATHS or --poll,
    delivers what is still pending. Exit code 1 if anything was refused, rejected or is
    still pending when the timeout ends (it stays in the outbox for the next run).
    """
    settings = Settings()
    check = _validator(hospital, ZoneInfo(zone)) if validate else None
    trust = receipt_trust(settings, receipt_key)
    if poll:
        signer = _signer(settings, hospital)
        configure_logging(settings.log_level, settings=settings)
        with adapter_metrics(settings):
            asyncio.run(
                _poll_fhir(
                    settings, signer, poll, interval, check, timeout, resend_after, max_pages, trust
                )
            )
        return
    try:
        items = list(read_items(paths or []))
    except (FileNotFoundError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if paths and not items:
        console.print("[yellow]no .json or .ndjson files found[/yellow]")
        raise typer.Exit(1)
    signer = _signer(settings, hospital)
    values = [(i.value, i.origin) for i in items]
    _publish(settings, hospital, _signed(signer, values, check), timeout, resend_after, trust)


# Returns why the broker would refuse a message (None: it would be accepted).
Validator = Callable[[bytes], Rejected | None]


def _validator(hospital: str, zone: ZoneInfo) -> Validator:
    def check(value: bytes) -> Rejected | None:
        try:
            parse_message(value, hospital=hospital, zone=zone)
        except Rejected as refused:
            return refused
        return None

    return check


async def _poll_fhir(
    settings: Settings,
    signer: Signer,
    base: str,
    interval: float,
    check: Validator | None,
    timeout: float,
    resend_after: float,
    max_pages: int,
    trust: ReceiptTrust,
) -> None:
    """Poll until done (interval 0) or stopped: SIGTERM/SIGINT finish the page being read,
    queue what was read, keep the cursor and return (exit 0)."""
    stop = asyncio.Event()
    install_signal_handlers(stop)
    name = hashlib.sha256(base.encode()).hexdigest()[:12]
    cursor = Cursor(settings.data_dir / f"fhir-poll-{name}.json")
    token = os.environ.get("MRB_FHIR_SOURCE_TOKEN")
    outbox = open_outbox(settings)
    try:
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as client:
            while True:
                since = cursor.read()
                search = Search(client, base, since, token=token, max_pages=max_pages)
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
                queued, problems = _signed(signer, values, check)(outbox)
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
                        console.print(
                            f"[red]error:[/red] stopped after {search.pages_read} page(s) "
                            "(--max-pages) without moving the cursor; raise --max-pages"
                        )
                        raise typer.Exit(1)
                    console.print(
                        f"[yellow]stopped after {search.pages_read} page(s) (--max-pages); "
                        f"the next poll goes on from {newest}[/yellow]"
                    )
                if stop.is_set():
                    _stopped(cursor)
                    return
                delivery = asyncio.ensure_future(
                    _deliver(outbox, settings, signer.hospital, timeout, resend_after, trust)
                )
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({delivery, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not delivery.done():
                    delivery.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await delivery
                    _stopped(cursor)
                    return
                report = delivery.result()
                _report(outbox, report, queued, signer.hospital)
                if interval <= 0 or stop.is_set():
                    rejected = any(r.outcome == "rejected" for r in report.receipts.values())
                    if problems or report.pending or rejected:
                        raise typer.Exit(1)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                if stop.is_set():
                    _stopped(cursor)
                    return
    except (httpx.HTTPError, PollError) as exc:
        console.print(f"[red]error:[/red] polling {base} failed: {exc}")
        raise typer.Exit(1) from None
    finally:
        outbox.close()


def _stopped(cursor: Cursor) -> None:
    console.print(
        f"stopped: the cursor stays at {cursor.read() or 'the beginning'}; what was read "
        "is in the outbox and is sent on the next run"
    )


def _signer(settings: Settings, hospital: str) -> Signer:
    try:
        key_id, private_key = current_key(settings.keys_dir, hospital)
    except SigningKeyMissing as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    secret = load_or_create_key(settings.keys_dir / "adapter-routing.key")
    return Signer(hospital, key_id, private_key, secret)


def _signed(
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


# Puts messages in the outbox: (how many were queued, how many inputs were unusable).
Enqueue = Callable[[Outbox], tuple[int, int]]


def _publish(
    settings: Settings,
    hospital: str,
    enqueue: Enqueue,
    timeout: float,
    resend_after: float,
    trust: ReceiptTrust,
) -> None:
    """Store in the outbox, deliver, report; exit 1 on rejections, leftovers or problems."""
    outbox = open_outbox(settings)
    try:
        queued, problems = enqueue(outbox)
        report = asyncio.run(_deliver(outbox, settings, hospital, timeout, resend_after, trust))
        _report(outbox, report, queued, hospital)
    except sqlite3.Error as exc:  # a full or failing disk: Kafka is not the problem
        console.print(
            f"[red]error:[/red] the adapter outbox {settings.data_dir / OUTBOX_FILE} could not "
            f"be written ({exc}): this run's files were not queued; free space and run again"
        )
        raise typer.Exit(1) from None
    except Exception as exc:
        console.print(
            f"[red]error:[/red] {exc}. Messages stay in the outbox; run again when Kafka at "
            f"{bootstrap_of(settings)} is reachable."
        )
        raise typer.Exit(1) from None
    finally:
        outbox.close()
    if problems or report.pending or any(r.outcome == "rejected" for r in report.receipts.values()):
        raise typer.Exit(1)


def _host_port(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        console.print(f"[red]error:[/red] {option} takes HOST:PORT, e.g. 0.0.0.0:2575")
        raise typer.Exit(2)
    return host, int(port)


# Who may connect to a listener: the same options for MLLP and DICOM, each with its own
# environment variables (MRB_HL7V2_*, MRB_DICOM_*; several values: separated by spaces).
_PEERS = (
    "With --listen: an address or network (CIDR) that may connect; repeat for more. "
    "Default: loopback only (127.0.0.0/8, ::1)."
)
_CERT = "With --listen: TLS certificate (PEM)."
_KEY = "With --listen: its private key (PEM)."
_CLIENT_CA = "With --tls-cert: CA (PEM) whose client certificates are required (mTLS)."
Hl7Peers = Annotated[
    list[str] | None, typer.Option("--allow-peer", envvar="MRB_HL7V2_ALLOW_PEERS", help=_PEERS)
]
Hl7Cert = Annotated[Path | None, typer.Option(envvar="MRB_HL7V2_TLS_CERT", help=_CERT)]
Hl7Key = Annotated[Path | None, typer.Option(envvar="MRB_HL7V2_TLS_KEY", help=_KEY)]
Hl7ClientCa = Annotated[
    Path | None, typer.Option(envvar="MRB_HL7V2_TLS_CLIENT_CA", help=_CLIENT_CA)
]
DicomPeers = Annotated[
    list[str] | None, typer.Option("--allow-peer", envvar="MRB_DICOM_ALLOW_PEERS", help=_PEERS)
]
DicomCert = Annotated[Path | None, typer.Option(envvar="MRB_DICOM_TLS_CERT", help=_CERT)]
DicomKey = Annotated[Path | None, typer.Option(envvar="MRB_DICOM_TLS_KEY", help=_KEY)]
DicomClientCa = Annotated[
    Path | None, typer.Option(envvar="MRB_DICOM_TLS_CLIENT_CA", help=_CLIENT_CA)
]


def _listener_access(
    allow_peer: list[str] | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
) -> tuple[PeerAllowlist, TlsFiles | None]:
    """The allowlist and TLS files of a listener; exit 2 on a bad value or missing file."""
    try:
        peers = PeerAllowlist.parse(allow_peer or ())
        if tls_cert is None and tls_key is None and tls_client_ca is None:
            return peers, None
        if tls_cert is None or tls_key is None:
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        tls = TlsFiles(tls_cert, tls_key, tls_client_ca)
        tls.context()  # an unreadable file stops the start, not the first connection
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    return peers, tls


def _free_port(listen: str) -> None:
    """A busy --listen port stops the command before anything is opened: one line, exit 2."""
    host, port = _host_port(listen, "--listen")
    try:
        ensure_free(Listener(host, port, "--listen"))
    except PortInUse as exc:
        _port_in_use(exc)


def _port_in_use(exc: PortInUse) -> NoReturn:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(2) from None


def _access_text(peers: PeerAllowlist, tls: TlsFiles | None) -> str:
    return f"accepting {peers}" + (f" over {tls.describe()}" if tls else " (no TLS)")


@app.command("hl7v2")
def hl7v2(
    hospital: Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files of HL7 v2 messages (batch/file mode).")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for the MLLP listener, e.g. 0.0.0.0:2575.")
    ] = None,
    ack_to: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the LIS's own listener, for enhanced-mode app ACKs."),
    ] = None,
    charset: Annotated[
        str, typer.Option(help="Character set when MSH-18 is empty (many LIS send gbk).")
    ] = "utf-8",
    zone: Annotated[str, typer.Option(help="The hospital's time zone.")] = "Asia/Shanghai",
    mark_field: Annotated[
        str | None, typer.Option(help="Field carrying the 互认标识, e.g. OBR-46.")
    ] = None,
    obx_without_sub_id: Annotated[
        bool, typer.Option(help="The sender omits OBX-4 (values shifted one field left).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="File mode: seconds to wait for receipts.")] = 60.0,
    resend_after: Annotated[
        float, typer.Option(help="Seconds without a receipt before sending again.")
    ] = 30.0,
    allow_peer: Hl7Peers = None,
    tls_cert: Hl7Cert = None,
    tls_key: Hl7Key = None,
    tls_client_ca: Hl7ClientCa = None,
    receipt_key: ReceiptKeys = None,
) -> None:
    """Publish HL7 v2 ORU^R01 lab results as FHIR (one report per OBR group).

    With --listen it is an MLLP server: each message is stored in the outbox before it
    is acknowledged (AA, or CA in enhanced mode; AE/AR with ERR when it cannot be used);
    with --ack-to, enhanced-mode application ACKs follow once the broker's receipts
    arrive. Only --allow-peer addresses may connect (default: this machine only), over
    TLS with --tls-cert/--tls-key. Without --listen it reads files (MLLP-framed, or
    plain with FHS/BHS batches).
    """
    settings = Settings()
    # Checked first: a bad access setting stops the command before anything is opened.
    access = _listener_access(allow_peer, tls_cert, tls_key, tls_client_ca) if listen else None
    if listen:
        _free_port(listen)
    signer = _signer(settings, hospital)
    trust = receipt_trust(settings, receipt_key)
    try:
        config = InterfaceConfig(
            zone=ZoneInfo(zone),
            fallback_encoding=charset,
            recognition_mark_field=mark_field,
            obx_without_sub_id=obx_without_sub_id,
        )
    except (LookupError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    outbox = open_outbox(settings)
    intake = Intake(outbox, signer, config)
    if listen and access:
        target = _host_port(ack_to, "--ack-to") if ack_to else None
        where = _host_port(listen, "--listen")
        configure_logging(settings.log_level, settings=settings)  # per-connection lines
        try:
            with adapter_metrics(settings):
                asyncio.run(_listen_hl7(settings, intake, where, target, *access, trust))
        except PortInUse as exc:  # taken since the check above
            _port_in_use(exc)
        finally:
            outbox.close()
        return
    outbox.close()
    if not paths:
        console.print("[red]error:[/red] give files of HL7 v2 messages, or --listen HOST:PORT")
        raise typer.Exit(2)

    def enqueue(box: Outbox) -> tuple[int, int]:
        queued = problems = 0
        feed = replace(intake, outbox=box)
        for path in iter_paths(paths or [], suffixes=None):
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

    _publish(settings, hospital, enqueue, timeout, resend_after, trust)


async def _listen_hl7(
    settings: Settings,
    intake: Intake,
    where: tuple[str, int],
    ack_to: tuple[str, int] | None,
    peers: PeerAllowlist,
    tls: TlsFiles | None,
    trust: ReceiptTrust,
) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    acks = ApplicationAcks(ack_to)

    async def handle(raw: bytes) -> bytes | None:
        accepted = accept(raw, intake)
        acks.expect(accepted)
        return accepted.ack

    async def oversize(item: Oversize) -> bytes | None:
        return await reject_oversize(item, intake)

    try:
        server = await serve_mllp(
            *where,
            handle,
            on_oversize=oversize,
            peers=peers,
            tls=tls.context() if tls else None,
        )
    except OSError as exc:
        raise PortInUse(Listener(*where, "--listen"), exc.strerror or str(exc)) from None
    port = server.sockets[0].getsockname()[1]
    console.print(
        f"MLLP listener for {intake.hospital} on {where[0]}:{port}, {_access_text(peers, tls)}"
        + (f", application ACKs to {ack_to[0]}:{ack_to[1]}" if ack_to else "")
        + f"; publishing to {bootstrap_of(settings)}. Ctrl-C stops."
    )

    async def on_report(report: DeliveryReport) -> None:
        await acks.send(report.receipts)
        counts = Counter(r.outcome for r in report.receipts.values())
        if counts:
            console.print("delivered: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        _refused_line(report)

    try:
        await deliver_continuously(
            intake.outbox,
            bootstrap_of(settings),
            stop,
            trust=trust,
            hospital=intake.hospital,
            options=settings.kafka_options(),
            on_report=on_report,
        )
    finally:
        server.close()
        await server.wait_closed()
        console.print("stopped; undelivered messages stay in the outbox for the next run")


@app.command("dicom")
def dicom(
    hospital: Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="DICOM files or folders (folder mode).")
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for the C-STORE receiver, e.g. 0.0.0.0:11112.")
    ] = None,
    ae_title: Annotated[str, typer.Option(help="This receiver's AE title.")] = "MRB",
    wado_rs: Annotated[
        str | None, typer.Option(help="The hospital's DICOMweb WADO-RS base (for viewers).")
    ] = None,
    charset: Annotated[
        str | None, typer.Option(help="Character set for objects that declare none, e.g. GB18030.")
    ] = None,
    zone: Annotated[str, typer.Option(help="The hospital's time zone.")] = "Asia/Shanghai",
    quiet_seconds: Annotated[
        float, typer.Option(help="Publish a study after this long without new instances.")
    ] = 5.0,
    timeout: Annotated[
        float, typer.Option(help="Folder mode: seconds to wait for receipts.")
    ] = 60.0,
    resend_after: Annotated[
        float, typer.Option(help="Seconds without a receipt before sending again.")
    ] = 30.0,
    allow_peer: DicomPeers = None,
    allow_calling_aet: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-calling-aet",
            envvar="MRB_DICOM_ALLOW_CALLING_AETS",
            help="With --listen: a calling AE title that may associate; repeat for more. "
            "Default: any, from an allowed address.",
        ),
    ] = None,
    tls_cert: DicomCert = None,
    tls_key: DicomKey = None,
    tls_client_ca: DicomClientCa = None,
    receipt_key: ReceiptKeys = None,
) -> None:
    """Publish DICOM studies (headers only, never pixels) as ImagingStudy bundles.

    Folder mode reads PATHS, groups instances by study and publishes each study once.
    With --listen it is a DICOM Storage SCP: a PACS sends studies (C-STORE) and each
    quiet study is published; an instance is acknowledged only once it is on disk.
    Only --allow-peer addresses may connect (default: this machine only), addressing
    --ae-title and, with --allow-calling-aet, calling as one of those; over TLS with
    --tls-cert/--tls-key.
    """
    settings = Settings()
    access = _listener_access(allow_peer, tls_cert, tls_key, tls_client_ca) if listen else None
    if listen:
        _free_port(listen)
    signer = _signer(settings, hospital)
    trust = receipt_trust(settings, receipt_key)
    options = BundleOptions(hospital=hospital, wado_rs_base=wado_rs)
    if listen and access:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            console.print("[red]error:[/red] --listen takes HOST:PORT, e.g. 0.0.0.0:11112")
            raise typer.Exit(2)
        peers, tls = access
        scp = ScpSettings(
            host=host,
            port=int(port),
            ae_title=ae_title,
            fallback_charset=charset,
            allowed_peers=tuple(str(n) for n in peers.networks),
            allowed_calling_ae_titles=tuple(
                t for item in allow_calling_aet or () for t in item.replace(",", " ").split()
            ),
            tls=tls,
        )
        configure_logging(settings.log_level, settings=settings)  # per-connection lines
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # ours say who and why
        with adapter_metrics(settings):
            asyncio.run(
                _listen_dicom(settings, options, signer, scp, ZoneInfo(zone), quiet_seconds, trust)
            )
        return
    if not paths:
        console.print("[red]error:[/red] give DICOM files or folders, or --listen HOST:PORT")
        raise typer.Exit(2)
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
    enqueue = _signed(signer, values)
    _publish(
        settings,
        hospital,
        lambda box: (enqueue(box)[0], len(result.problems)),
        timeout,
        resend_after,
        trust,
    )


async def _listen_dicom(
    settings: Settings,
    options: BundleOptions,
    signer: Signer,
    scp_settings: ScpSettings,
    zone: ZoneInfo,
    quiet_seconds: float,
    trust: ReceiptTrust,
) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    outbox = open_outbox(settings)
    spool = Spool(
        settings.data_dir / "dicom-spool.db", load_or_create_key(settings.keys_dir / "outbox.key")
    )
    adapter = DicomAdapter(
        options=options,
        outbox=outbox,
        spool=spool,
        signer=signer,
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
            listener = Listener(scp_settings.host, scp_settings.port, "--listen")
            _port_in_use(PortInUse(listener, exc.strerror or str(exc)))
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    adapter.collector.start()
    calling = ", ".join(scp_settings.allowed_calling_ae_titles) or "any"
    console.print(
        f"DICOM receiver {scp_settings.ae_title} on {scp_settings.host}:{scp.port} for "
        f"{options.hospital}, {_access_text(scp.peers, scp_settings.tls)}, calling AE titles: "
        f"{calling} ({restored} spooled instance(s) restored); publishing to "
        f"{bootstrap_of(settings)}. Ctrl-C stops."
    )
    try:
        await deliver_continuously(
            outbox,
            bootstrap_of(settings),
            stop,
            trust=trust,
            hospital=options.hospital,
            options=settings.kafka_options(),
            resend_after=timedelta(seconds=30),
            on_report=lambda r: _listen_report(r, adapter),
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


def _listen_report(report: DeliveryReport, adapter: DicomAdapter) -> None:
    counts = Counter(r.outcome for r in report.receipts.values())
    if counts:
        console.print(
            f"delivered: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))} "
            f"(studies published so far: {adapter.published})"
        )
    _refused_line(report)


async def _deliver(
    outbox: Outbox,
    settings: Settings,
    hospital: str,
    timeout: float,
    resend_after: float,
    trust: ReceiptTrust,
) -> DeliveryReport:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("delivering", total=None)
        return await deliver(
            outbox,
            bootstrap_of(settings),
            trust=trust,
            hospital=hospital,
            options=settings.kafka_options(),
            resend_after=timedelta(seconds=resend_after),
            timeout=timeout,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )


def _report(outbox: Outbox, report: DeliveryReport, queued: int, hospital: str) -> None:
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
    _refused_line(report)
    if report.pending:
        console.print(
            f"[yellow]{len(report.pending)} message(s) still pending[/yellow]: kept in the "
            "outbox and sent again on the next run"
        )


def _refused_line(report: DeliveryReport) -> None:
    """Receipts not believed in this delivery, by reason (details: `mrb adapter status`)."""
    if report.refused:
        reasons = Counter(r.reason for r in report.refused)
        console.print(
            f"[red]{len(report.refused)} receipt(s) refused[/red] ("
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            + "): not signed by a trusted broker receipt key for this hospital; those "
            "messages stay in the outbox and are resent (see `mrb adapter status`)"
        )


@app.command("status")
def status(
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per list.")] = 20,
    receipt_key: ReceiptKeys = None,
) -> None:
    """Pending, delivered and rejected messages in this adapter's outbox, with reasons;
    receipts refused (not signed by a trusted broker receipt key) and the keys trusted."""
    settings = Settings()
    trust = receipt_trust(settings, receipt_key, warn=False)
    outbox = open_outbox(settings)
    try:
        counts = outbox.counts(hospital)
        refusals = outbox.refusals(hospital)
        replayed = outbox.replayed_count(hospital)
        console.print(
            f"pending: {counts[PENDING]}, delivered: {counts[DELIVERED]}"
            + (f" ({replayed} after a rejection, replayed by the broker)" if replayed else "")
            + f", rejected: {counts[REJECTED]}, receipts refused: "
            f"{sum(r.count for r in refusals)}"
        )
        if trust:
            console.print(
                f"receipt keys trusted: {', '.join(trust.key_ids())} "
                f"(from {', '.join(trust.sources)})"
            )
        else:
            console.print(f"[yellow]receipt keys trusted: none[/yellow]: {_NO_RECEIPT_KEY}")
        for state in (PENDING, REJECTED):
            rows = outbox.listing(state, hospital, limit)
            if not rows:
                continue
            table = Table(
                "hospital", "message id", "from", "attempts", "code", "reason", title=state
            )
            for s in rows:
                table.add_row(
                    s.hospital,
                    s.message_id,
                    s.origin,
                    str(s.attempts),
                    s.error_code or "",
                    s.error_detail or "",
                )
            console.print(table)
        if refusals:
            table = Table(
                "hospital",
                "reason",
                "count",
                "last",
                "last message id",
                "key id",
                "detail",
                title="receipts refused",
            )
            for r in refusals:
                table.add_row(
                    r.hospital,
                    r.reason,
                    str(r.count),
                    r.last_at,
                    r.last_message_id,
                    r.last_key_id or "",
                    r.last_detail,
                )
            console.print(table)
    finally:
        outbox.close()
