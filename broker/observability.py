"""Logging set-up and the Prometheus metrics mrb exports. No patient data in either."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from broker.instance import INSTALLATION_ID_FILE, Listener, listen_socket

if TYPE_CHECKING:
    from broker.settings import Settings

MESSAGES = Counter(
    "mrb_messages_total", "Messages processed by the ingest worker", ["hospital", "outcome"]
)
RESULTS_INGESTED = Counter(
    "mrb_results_ingested_total", "Result versions stored", ["hospital", "placement"]
)
REJECTED = Counter("mrb_results_rejected_total", "Messages sent to the DLQ", ["code"])
NOT_LINKED = Counter(
    "mrb_identifiers_not_linked_total",
    "National identifiers kept to their hospital: untrusted system, or the record's birth "
    "date or sex contradicts the number",
    ["reason"],
)
CONSUMER_LAG = Gauge("mrb_consumer_lag", "Messages not yet consumed", ["topic", "partition"])
BATCH_SECONDS = Histogram("mrb_ingest_batch_seconds", "Time to index one fetched batch")
# 1 while the worker holds its partitions paused because the database is unavailable
# (or aborted its batch in a deadlock): broker/storage/outage.py says which errors.
INGEST_PAUSED = Gauge(
    "mrb_ingest_paused", "1 while ingest is paused: the database is unavailable (else 0)"
)
# From a record's Kafka timestamp (the adapter's send, or a resend) to its batch's commit.
END_TO_END_SECONDS = Histogram(
    "mrb_ingest_end_to_end_seconds",
    "Seconds from a message's Kafka timestamp to its batch being indexed and committed",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
# Bounded labels only: a known method or "OTHER", the route template (never the path).
REQUEST_SECONDS = Histogram(
    "mrb_http_request_seconds", "HTTP request latency", ["method", "route", "status"]
)
CHECKS = Counter("mrb_recognition_checks_total", "Recognition check answers", ["decision"])
# Rate limits (broker/services/rate_limits.py); labels are fixed words, never a caller.
RATE_LIMITED = Counter("mrb_rate_limited_total", "Requests refused by a rate limit", ["limit"])
RATE_LIMIT_ERRORS = Counter(
    "mrb_rate_limit_errors_total",
    "Rate limits not checked because their storage (database or Redis) failed",
    ["limit"],
)
BREAK_GLASS = Counter(
    "mrb_break_glass_total",
    "Emergency requests let through although over a rate limit (audited as break-glass)",
    ["channel", "limit"],
)
# Reads beyond a patient's consent, opt-out or sensitivity in an emergency, with a reason
# (broker/services/consents.py): each is audited as break-glass and reviewed; alert on any.
BREAK_GLASS_READS = Counter(
    "mrb_break_glass_reads_total",
    "Emergency reads let beyond the patient's consent, opt-out or sensitivity (break-glass)",
    ["channel"],
)
# The audit sealer (broker/services/audit_sealer.py): when a round last completed, and
# rounds that failed (export, database, chain behind its export).
AUDIT_LAST_SEAL = Gauge(
    "mrb_audit_last_seal_timestamp_seconds",
    "Unix time the audit sealer last completed a round (sealed and exported what was new)",
)
AUDIT_SEAL_FAILURES = Counter(
    "mrb_audit_seal_failures_total", "Audit sealer rounds that failed", ["reason"]
)
FOLLOW_UP_FAILURES = Counter(
    "mrb_ingest_follow_up_failures_total",
    "Safety notices or worklist updates that failed while their results were still indexed",
    ["step"],
)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per scrape on stderr."""


def start_metrics_server(
    host: str,
    port: int,
    *,
    sock: socket.socket | None = None,
    registry: CollectorRegistry = REGISTRY,
    setting: str = "MRB_METRICS_PORT",
) -> WSGIServer:
    """Serve /metrics on host:port from a background thread (prometheus_client's WSGI app
    and threading server), apart from the API port; stop it with `.shutdown()` and
    `.server_close()`.

    `sock`: a socket already listening there (broker.instance.listen_socket), taken over as
    is, so the port cannot be lost between the check at start and this server. Without
    one, the port is bound here: PortInUse (an OSError) names `setting`. `registry`: what
    it serves (an adapter serves its outbox's: adapters/common/metrics.py).
    """
    if sock is None:
        sock = listen_socket(Listener(host, port, setting))
    server = ThreadingWSGIServer((host, port), _QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()
    server.server_name = host
    server.server_port = sock.getsockname()[1]
    server.setup_environ()
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream it was
    when logging was configured (a test harness or a daemoniser may swap and close it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        """Set by StreamHandler.__init__; ignored."""


def configure_logging(
    level: str = "INFO", *, settings: Settings | None = None, process: str | None = None
) -> None:
    """One logging design for every mrb process: JSON lines when not on a terminal (log
    shippers), readable lines on one; mrb's own records, structlog's and every library's
    go through the same renderer with the same base fields: timestamp (UTC ISO), level,
    logger, event, `process` (the mrb command: "up", "worker", "adapter hl7v2" ...), `pid`,
    `installation` (MRB_INSTALLATION_ID, when known) and whatever the context bound (a
    request's `request_id`, a CDS call's `hook_instance`; broker/correlation.py).

    Exceptions are logged as their type and stack, without their message: a database
    driver's error text can carry the statement's parameters (identifiers).
    """
    base = _BaseFields(process or _command(), _installation(settings))
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        base,
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _exception_without_message,
            renderer,
        ],
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),  # fields passed as `extra`, e.g. the access log's
            *shared,
        ],
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite and SQLAlchemy log every statement with its parameters at DEBUG/INFO:
    # the values a caller looked up (a resident ID in a FHIR id) would be in the log.
    quiet = ("aiokafka", "uvicorn.access", "httpx", "alembic", "aiosqlite", "sqlalchemy")
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _BaseFields:
    """Adds the fields every line of this process carries (explicit fields win)."""

    def __init__(self, process: str, installation: str | None) -> None:
        self._fields: dict[str, object] = {"process": process, "pid": os.getpid()}
        if installation:
            self._fields["installation"] = installation

    def __call__(
        self, logger: object, name: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict


def _command() -> str:
    """The mrb command running ("worker", "adapter hl7v2"): command names only, never
    its arguments (a file name may name a patient)."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "mrb"
    words = ctx.command_path.split()[1:]
    return " ".join(words) or "mrb"


def _installation(settings: Settings | None) -> str | None:
    """MRB_INSTALLATION_ID, else the data folder's installation-id file if there is one
    (never made here: only the processes that own the folder make it)."""
    if settings is None:
        return None
    if settings.installation_id:
        return settings.installation_id
    try:
        text = (settings.data_dir / INSTALLATION_ID_FILE).read_text().strip()
    except OSError:
        return None
    return text if _SAFE_ID.fullmatch(text) else None


_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _exception_without_message(
    logger: object, name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`exception`: the exception's type, its causes' types and the stack, not the text."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return event_dict
    _, exc, tb = exc_info
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(type(seen).__qualname__)
        seen = seen.__cause__ or seen.__context__
    stack = "".join(traceback.format_tb(tb)) if tb is not None else ""
    event_dict["exception"] = f"{' <- '.join(chain)} (message not logged)\n{stack}".rstrip()
    return event_dict
