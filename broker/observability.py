"""The Prometheus metrics mrb exports, and (re-exported from broker/logging_setup.py) its
logging set-up. No patient data in either."""

from __future__ import annotations

import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from broker.instance import Listener, listen_socket
from broker.logging_setup import configure_logging as configure_logging

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
