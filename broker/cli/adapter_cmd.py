"""`mrb adapter fhir|hl7v2|dicom|status`: the options of the hospital-side adapters.

Each command parses its options, builds the adapter's `Site` from the MRB_ settings and
hands over to the adapter's own wiring (`adapters/<kind>/wiring.py`), which never
imports the broker; the adapter's `Stop` and `ListenerBusy` become exit codes here.
The adapters (pydicom, pynetdicom, python-hl7, aiokafka) are imported when a command runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from adapters.common.receipts import ENV_SETTING, RECEIPT_KEYS_FILE
from adapters.common.site import OUTBOX_FILE, ListenerBusy, Site, Stop
from adapters.fhir.poll import DEFAULT_MAX_PAGES

if TYPE_CHECKING:
    from adapters.common.outbox import Outbox
    from adapters.common.publishing import Validator
    from broker.instance import PortInUse
    from broker.settings import Settings

app = typer.Typer(help="Hospital-side adapters.", no_args_is_help=True)
console = Console(soft_wrap=True)

__all__ = ["OUTBOX_FILE", "adapter_metrics", "app", "bootstrap_of", "open_outbox", "site_of"]

T = TypeVar("T")


def bootstrap_of(settings: Settings) -> str:
    """MRB_KAFKA_BOOTSTRAP, else the embedded broker that `mrb up`/`mrb demo` runs."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_kafka_port}"


def site_of(settings: Settings) -> Site:
    """What the adapters take from this installation's settings."""
    from broker.logging_setup import configure_logging
    from broker.security.keys import load_or_create_key

    return Site(
        data_dir=settings.data_dir,
        keys_dir=settings.keys_dir,
        bootstrap=bootstrap_of(settings),
        secret=load_or_create_key,
        start_logging=lambda: configure_logging(settings.log_level, settings=settings),
        kafka_options=settings.kafka_options,
        metrics=lambda: adapter_metrics(settings),
        ensure_free=_ensure_free,
    )


def open_outbox(settings: Settings) -> Outbox:
    """The adapter's outbox in MRB_DATA_DIR (sealed with an adapter-local key)."""
    from adapters.common.wiring import open_outbox as open_site_outbox

    return _exits(lambda: open_site_outbox(site_of(settings)))


@contextlib.contextmanager
def adapter_metrics(settings: Settings) -> Iterator[None]:
    """While a long-running adapter runs: its outbox's metrics on MRB_METRICS_HOST:
    MRB_ADAPTER_METRICS_PORT (0: off). A busy port: one line, exit 2."""
    port = settings.adapter_metrics_port
    if not port:
        yield
        return
    from adapters.common.metrics import outbox_registry
    from broker.instance import PortInUse
    from broker.observability import start_metrics_server

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


def _ensure_free(host: str, port: int, option: str) -> None:
    from broker.instance import Listener, ensure_free

    ensure_free(Listener(host, port, option))


def _run(settings: Settings, adapter: Callable[[Site], None]) -> None:
    """Run an adapter on this installation; its early stops become exit codes."""
    _exits(lambda: adapter(site_of(settings)))


def _exits(work: Callable[[], T]) -> T:
    from broker.instance import Listener, PortInUse

    try:
        return work()
    except Stop as stop:
        raise typer.Exit(stop.code) from None
    except ListenerBusy as busy:  # taken since the check at start
        _port_in_use(PortInUse(Listener(busy.host, busy.port, busy.option), busy.reason))
    except PortInUse as exc:  # the check at start
        _port_in_use(exc)


def _port_in_use(exc: PortInUse) -> NoReturn:
    console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(2) from None


def _settings() -> Settings:
    from broker.settings import Settings

    return Settings()


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
Hospital = Annotated[str, typer.Option(help="Registered hospital id, e.g. H001.")]
Zone = Annotated[str, typer.Option(help="The hospital's time zone.")]
ResendAfter = Annotated[float, typer.Option(help="Seconds without a receipt before sending again.")]

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


@app.command("fhir")
def fhir(
    hospital: Hospital,
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
    zone: Zone = "Asia/Shanghai",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for receipts.")] = 60.0,
    resend_after: ResendAfter = 30.0,
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
    from adapters.common.publishing import Delivery
    from adapters.fhir import wiring

    settings = _settings()
    check = _validator(hospital, zone) if validate else None
    searched = (
        wiring.PollOptions(poll, interval, max_pages, os.environ.get("MRB_FHIR_SOURCE_TOKEN"))
        if poll
        else None
    )
    _run(
        settings,
        lambda site: wiring.run(
            site,
            hospital,
            paths=paths or [],
            poll=searched,
            check=check,
            delivery=Delivery(timeout, resend_after),
            receipt_key=receipt_key,
        ),
    )


def _validator(hospital: str, zone: str) -> Validator:
    """Why the broker's own parser would refuse a message (None: it would accept it)."""
    from zoneinfo import ZoneInfo

    from broker.domain.rejections import Rejected
    from broker.ingest.parse import parse_message

    tz = ZoneInfo(zone)

    def check(value: bytes) -> Rejected | None:
        try:
            parse_message(value, hospital=hospital, zone=tz)
        except Rejected as refused:
            return refused
        return None

    return check


@app.command("hl7v2")
def hl7v2(
    hospital: Hospital,
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
    zone: Zone = "Asia/Shanghai",
    mark_field: Annotated[
        str | None, typer.Option(help="Field carrying the 互认标识, e.g. OBR-46.")
    ] = None,
    obx_without_sub_id: Annotated[
        bool, typer.Option(help="The sender omits OBX-4 (values shifted one field left).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="File mode: seconds to wait for receipts.")] = 60.0,
    resend_after: ResendAfter = 30.0,
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
    from adapters.common.publishing import Delivery
    from adapters.common.wiring import ListenerOptions
    from adapters.hl7v2 import wiring

    settings = _settings()
    listener = (
        ListenerOptions(listen, allow_peer, tls_cert, tls_key, tls_client_ca) if listen else None
    )
    interface = wiring.Interface(zone, charset, mark_field, obx_without_sub_id)
    _run(
        settings,
        lambda site: wiring.run(
            site,
            hospital,
            paths=paths or [],
            listener=listener,
            ack_to=ack_to,
            interface=interface,
            delivery=Delivery(timeout, resend_after),
            receipt_key=receipt_key,
        ),
    )


@app.command("dicom")
def dicom(
    hospital: Hospital,
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
    zone: Zone = "Asia/Shanghai",
    quiet_seconds: Annotated[
        float, typer.Option(help="Publish a study after this long without new instances.")
    ] = 5.0,
    timeout: Annotated[
        float, typer.Option(help="Folder mode: seconds to wait for receipts.")
    ] = 60.0,
    resend_after: ResendAfter = 30.0,
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
    from adapters.common.publishing import Delivery
    from adapters.common.wiring import ListenerOptions
    from adapters.dicom import wiring

    settings = _settings()
    listener = (
        ListenerOptions(listen, allow_peer, tls_cert, tls_key, tls_client_ca) if listen else None
    )
    receiver = wiring.Receiver(ae_title, tuple(allow_calling_aet or ()), quiet_seconds)
    _run(
        settings,
        lambda site: wiring.run(
            site,
            hospital,
            paths=paths or [],
            listener=listener,
            receiver=receiver,
            wado_rs=wado_rs,
            charset=charset,
            zone=zone,
            delivery=Delivery(timeout, resend_after),
            receipt_key=receipt_key,
        ),
    )


@app.command("status")
def status(
    hospital: Annotated[str | None, typer.Option(help="Only this hospital.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per list.")] = 20,
    receipt_key: ReceiptKeys = None,
) -> None:
    """Pending, delivered and rejected messages in this adapter's outbox, with reasons;
    receipts refused (not signed by a trusted broker receipt key) and the keys trusted."""
    from adapters.common.status import show

    _run(
        _settings(),
        lambda site: show(site, hospital=hospital, limit=limit, receipt_key=receipt_key),
    )
