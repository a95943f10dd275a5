"""Logging set-up and the Prometheus metrics mrb exports. No patient data in either."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import structlog
from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from broker.instance import Listener, listen_socket

MESSAGES = Counter(
    "mrb_messages_total", "Messages processed by the ingest worker", ["hospital", "outcome"]
)
RESULTS_INGESTED = Counter(
    "mrb_results_ingested_total", "Result versions stored", ["hospital", "placement"]
)
REJECTED = Counter("mrb_results_rejected_total", "Messages sent to the DLQ", ["code"])
CONSUMER_LAG = Gauge("mrb_consumer_lag", "Messages not yet consumed", ["topic", "partition"])
BATCH_SECONDS = Histogram("mrb_ingest_batch_seconds", "Time to index one fetched batch")
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
FOLLOW_UP_FAILURES = Counter(
    "mrb_ingest_follow_up_failures_total",
    "Safety notices or worklist updates that failed while their results were still indexed",
    ["step"],
)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per scrape on stderr."""


def start_metrics_server(host: str, port: int, *, sock: socket.socket | None = None) -> WSGIServer:
    """Serve /metrics on host:port from a background thread (prometheus_client's WSGI app
    and threading server), apart from the API port; stop it with `.shutdown()` and
    `.server_close()`.

    `sock`: a socket already listening there (broker.instance.listen_socket), taken over as
    is, so the port cannot be lost between the check at start and this server. Without
    one, the port is bound here: PortInUse (an OSError) names MRB_METRICS_PORT.
    """
    if sock is None:
        sock = listen_socket(Listener(host, port, "MRB_METRICS_PORT"))
    server = ThreadingWSGIServer((host, port), _QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()
    server.server_name = host
    server.server_port = sock.getsockname()[1]
    server.setup_environ()
    server.set_app(make_wsgi_app())
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def configure_logging(level: str = "INFO") -> None:
    """JSON lines when not on a terminal (log shippers), readable lines on one."""
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),  # fields passed as `extra`, e.g. the access log's
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite and SQLAlchemy log every statement with its parameters at DEBUG/INFO:
    # the values a caller looked up (a resident ID in a FHIR id) would be in the log.
    quiet = ("aiokafka", "uvicorn.access", "httpx", "alembic", "aiosqlite", "sqlalchemy")
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
