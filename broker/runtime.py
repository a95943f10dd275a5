"""Running mrb's processes: embedded broker, migrations, ingest worker, HTTP server,
metrics listener.

Before anything starts, the process claims what it will own (`claim`): the lock on its
data folder and every port it listens on; a clash stops it there, having changed nothing.
One asyncio loop holds the rest; SIGINT/SIGTERM set one stop event and everything
started is stopped in reverse order: the worker leaves its group, then the broker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.ingest.fhir_validation import warm_validation
from broker.instance import (
    DataDirLock,
    Listener,
    ensure_free,
    installation_id,
    listen_socket,
    lock_data_dir,
    writes_data_dir,
)
from broker.kafka.embedded import EmbeddedBrokerError, EmbeddedKafka
from broker.kafka.topics import default_partitions, ensure_topics
from broker.observability import start_metrics_server
from broker.settings import Settings
from broker.storage.database import upgrade
from broker.storage.database_url import sqlite_file

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the stack owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _plain_answer(status: bytes, text: bytes) -> bytes:
    """A whole plain-text response that closes the connection (sent before any app runs)."""
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_REQUEST_TIMEOUT = _plain_answer(
    b"408 Request Timeout", b"the request headers did not arrive in time\n"
)
_HEADERS_TOO_LARGE = _plain_answer(
    b"431 Request Header Fields Too Large",
    b"the request headers are larger than MRB_MAX_HEADER_BYTES\n",
)


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request's line
    and headers.

    uvicorn times out idle keep-alive connections but not a client that sends its
    headers a byte at a time (slowloris): here the request line and headers must arrive
    within `header_timeout` seconds of the connection (or of the first byte of the next
    request on a kept-alive one), else the client gets 408 and the connection closes. A
    header block still growing past `max_header_bytes` gets 431 at once (the parser has no
    limit of its own; a block that arrives whole is measured by the API's middleware).
    The body's own deadline is the API edge's (MRB_BODY_READ_TIMEOUT).

    httptools (llhttp, in C) rather than h11: h11 parsed and framed in Python and took a
    fifth of the API's CPU per check (docs/performance.md).
    """

    header_timeout = 10.0
    max_header_bytes = 16 * 1024
    _header_timer: asyncio.TimerHandle | None = None
    _in_head = True  # between a message's first byte and its last header (or none yet)
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self._in_head:
            self._disarm()  # the headers are in
            return
        # Every byte of a chunk after which the headers are still incomplete is head.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._disarm()
            self.transport.write(_HEADERS_TOO_LARGE)
            self.transport.close()
            return
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._in_head, self._head_bytes = True, 0  # the next request's clock starts with it

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()


def header_deadline_protocol(seconds: float, max_header_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class with its header deadline and size limit set."""
    return type(
        "HeaderDeadlineHttpTools",
        (_HeaderDeadline,),
        {"header_timeout": seconds, "max_header_bytes": max_header_bytes},
    )


def server_config(app: object, settings: Settings) -> uvicorn.Config:
    """uvicorn for the API: httptools with bounded headers and timeouts (docs/security.md), on
    uvloop (loop="auto" picks it when installed: it is a dependency)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.http_host,
        port=settings.http_port,
        http=header_deadline_protocol(settings.http_header_timeout, settings.max_header_bytes),
        timeout_keep_alive=settings.http_keep_alive_timeout,
        log_config=None,
        access_log=False,
        lifespan="off",
    )


@dataclass
class Claim:
    """What a process secured before starting anything: its data folder and its ports.

    The HTTP and metrics sockets are already listening; the servers take them over, so
    nothing else can take those ports in between. Release what was not handed over.
    """

    lock: DataDirLock | None = None
    http: socket.socket | None = None
    http_listener: Listener | None = None
    metrics: socket.socket | None = None

    def release(self) -> None:
        for sock in (self.http, self.metrics):
            if sock is not None:
                sock.close()
        self.http = self.metrics = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def http_listener(settings: Settings, *, api: bool) -> Listener:
    """The API's address, or a worker's own health port (several workers on one host)."""
    if api:
        return Listener(settings.http_host, settings.http_port, "MRB_HTTP_PORT")
    return Listener(settings.http_host, settings.worker_health_port, "MRB_WORKER_HEALTH_PORT")


def claim(
    settings: Settings,
    *,
    api: bool,
    worker: bool,
    kafka_needed: bool,
    command: str | None = None,
    lock: bool | None = None,
) -> Claim:
    """Lock the data folder (when this process writes it, or `lock`) and secure every port
    it will listen on, before anything is created, deleted or started.

    Raises broker.instance.Refused (DataDirInUse, PortInUse, InstallationIdMissing): one
    line for the operator, having changed nothing.
    """
    embedded = kafka_needed and not settings.kafka_bootstrap
    if command is None:
        command = "mrb up" if api and worker else ("mrb serve" if api else "mrb worker")
    claimed = Claim()
    try:
        if lock if lock is not None else writes_data_dir(settings, embedded_kafka=embedded):
            claimed.lock = lock_data_dir(settings.data_dir, command)
        if api or worker:
            claimed.http_listener = http_listener(settings, api=api)
            claimed.http = listen_socket(claimed.http_listener)
            if settings.metrics_port:
                claimed.metrics = listen_socket(
                    Listener(settings.metrics_host, settings.metrics_port, "MRB_METRICS_PORT")
                )
        if embedded:
            # tansu binds it itself: checked free here, and its own child must be the one
            # listening there before it counts as ready (EmbeddedKafka.start).
            ensure_free(
                Listener("127.0.0.1", settings.embedded_kafka_port, "MRB_EMBEDDED_KAFKA_PORT")
            )
        if worker:
            installation_id(settings)  # its consumer group; given, or made once in the folder
    except BaseException:
        claimed.release()
        raise
    return claimed


@dataclass
class Stack:
    container: Container
    stop: asyncio.Event
    kafka: EmbeddedKafka | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    server: _Server | None = None
    metrics: WSGIServer | None = None
    listener: Listener | None = None  # the HTTP server's: the API's, or a worker's health port

    @property
    def api_url(self) -> str:
        if self.listener is not None:
            return f"http://{self.listener.address}"
        s = self.container.settings
        return f"http://{s.http_host}:{s.http_port}"

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus scrapes this process; None when metrics are off."""
        if self.metrics is None:
            return None
        s = self.container.settings
        return f"http://{s.metrics_host}:{s.metrics_port}/metrics"


def private_sqlite_file(url: str) -> Path | None:
    """Make the SQLite database file owner-only (0600): created so before SQLite opens it
    (SQLite gives its -wal and -shm files the same mode), or tightened if it exists.

    Returns the file, or None for a database that is not a SQLite file.
    """
    path = sqlite_file(url)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # empty file: an empty database
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except OSError as exc:  # e.g. owned by another user: say so, keep running
            logger.warning("cannot make %s owner-only: %s", file, exc.strerror)
    return path


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings,
    *,
    api: bool,
    worker: bool,
    kafka_needed: bool,
    stop: asyncio.Event | None = None,
    claimed: Claim | None = None,
) -> AsyncIterator[Stack]:
    """Start what is asked, yield once it is ready, stop it all on exit.

    `claimed`: what the caller already secured with `claim` (the caller releases it);
    without it, the stack claims its folder and ports itself, first, and releases them last.
    """
    stop = stop or asyncio.Event()
    own_claim = claimed is None
    if claimed is None:
        claimed = claim(settings, api=api, worker=worker, kafka_needed=kafka_needed)
    try:
        container = Container.build(settings)
    except BaseException:
        if own_claim:
            claimed.release()
        raise
    stack = Stack(container, stop)
    try:
        if kafka_needed and not settings.kafka_bootstrap:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            stack.kafka = EmbeddedKafka(
                settings.embedded_kafka_port,
                binary=settings.tansu_bin,
                log_file=settings.data_dir / "tansu.log",
            )
            await stack.kafka.start()
            container.kafka_bootstrap = stack.kafka.bootstrap
            stack.tasks.append(
                asyncio.create_task(_watch_broker(stack.kafka, stop), name="embedded-kafka")
            )
        if kafka_needed:
            bootstrap = container.kafka_bootstrap or settings.kafka_bootstrap
            if bootstrap is None:
                raise RuntimeError("no Kafka bootstrap address")
            await ensure_topics(
                bootstrap,
                default_partitions(settings.results_partitions),
                settings.kafka_options(),
            )
        private_sqlite_file(settings.resolved_database_url)
        await upgrade(settings.resolved_database_url, settings.database_schema)
        # Read the catalog (YAML) and compile the FHIR validator before serving, not in the
        # first request or batch, which would wait a second for them.
        await asyncio.to_thread(container.reference_rules)
        if worker:
            await asyncio.to_thread(warm_validation, settings.fhir_validation)
        if worker:
            ingest = container.ingest_worker()
            stack.tasks.append(asyncio.create_task(ingest.run(stop), name="ingest-worker"))
            relay = container.event_relay()
            stack.tasks.append(asyncio.create_task(relay.run(stop), name="event-relay"))
            sealer = container.audit_sealer()
            stack.tasks.append(asyncio.create_task(sealer.run(stop), name="audit-sealer"))
        if claimed.metrics is not None:
            sock, claimed.metrics = claimed.metrics, None
            stack.metrics = start_metrics_server(
                settings.metrics_host, settings.metrics_port, sock=sock
            )
        if claimed.http is not None:
            sock, claimed.http = claimed.http, None
            stack.listener = claimed.http_listener
            role = "all" if api and worker else ("api" if api else "worker")
            config = server_config(create_app(container, role=role), settings)
            stack.server = _Server(config)
            stack.tasks.append(asyncio.create_task(stack.server.serve(sockets=[sock]), name="http"))
            while not stack.server.started:
                if stack.tasks[-1].done():
                    stack.tasks[-1].result()  # raises why it failed
                    raise RuntimeError(f"the HTTP server on {stack.api_url} stopped at start")
                await asyncio.sleep(0.05)
        yield stack
    finally:
        # In order: the worker commits and leaves its consumer group, the relay and the
        # HTTP server finish; then the metrics listener; the broker last.
        stop.set()
        if stack.server is not None:
            stack.server.should_exit = True
        for task in stack.tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
        if stack.metrics is not None:
            await asyncio.to_thread(stack.metrics.shutdown)
            stack.metrics.server_close()
        if stack.kafka is not None:
            await stack.kafka.stop()
        await container.close()
        if own_claim:
            claimed.release()


async def _watch_broker(kafka: EmbeddedKafka, stop: asyncio.Event) -> None:
    """Fail the stack if the embedded broker dies while it is meant to run."""
    exited = asyncio.create_task(kafka.wait_exited())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not exited.done():
            exited.cancel()
    if exited.done() and not exited.cancelled() and not stop.is_set():
        raise EmbeddedBrokerError(
            f"the embedded Kafka broker (tansu) exited with code {exited.result()} "
            f"(its log: {kafka.log_file or 'none'})"
        )


async def wait_for_failure_or_stop(stack: Stack) -> None:
    """Block until stop is requested or a background task dies (and say which)."""
    stopper = asyncio.create_task(stack.stop.wait())
    done, _ = await asyncio.wait([stopper, *stack.tasks], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    for task in done:
        if task is not stopper and task.exception() is not None:
            raise RuntimeError(
                f"{task.get_name()} failed: {task.exception()}"
            ) from task.exception()
