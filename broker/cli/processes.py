"""`mrb serve --workers N` and `mrb worker --processes N`: one parent, N child processes.

The parent secures what must be done once before the children start — the data folder's
lock, the API's listening socket (handed to every API child, so the kernel spreads the
connections among them and the header-deadline protocol of each stays in force), the
migrations, the installation id that names the consumer group — then starts the children
as `mrb serve|worker --child I` and supervises them:

- SIGINT or SIGTERM to the parent is passed to every child, and the parent exits with the
  worst status once they have stopped;
- a child that stops on its own stops the others (an orchestrator restarts the whole unit:
  a half-sized API or worker pool is not what was deployed).

Child I serves its own metrics on MRB_METRICS_PORT + I, and a worker child its health on
MRB_WORKER_HEALTH_PORT + I (Prometheus scrapes each; one registry per process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from broker.instance import Listener, listen_socket
from broker.runtime import Claim, claim, http_listener, private_sqlite_file
from broker.settings import Settings

STOP_GRACE_SECONDS = 30.0  # a worker child commits its batch and leaves its group first


@dataclass(frozen=True)
class Child:
    """What a child process is told by its parent (hidden options)."""

    index: int
    listen_fd: int | None = None  # the API socket the parent opened


def child_claim(settings: Settings, child: Child, *, api: bool) -> Claim:
    """A child's ports: the inherited API socket or its own health port, and its metrics
    port (each offset by its index); never the folder's lock, which the parent holds."""
    claimed = Claim()
    try:
        if api:
            if child.listen_fd is None:
                raise RuntimeError("an API child needs the parent's socket (--listen-fd)")
            claimed.http_listener = http_listener(settings, api=True)
            claimed.http = _inherited(child.listen_fd)
        else:
            claimed.http_listener = Listener(
                settings.http_host,
                settings.worker_health_port + child.index,
                "MRB_WORKER_HEALTH_PORT",
            )
            claimed.http = listen_socket(claimed.http_listener)
        if settings.metrics_port:
            claimed.metrics = listen_socket(
                Listener(
                    settings.metrics_host, settings.metrics_port + child.index, "MRB_METRICS_PORT"
                )
            )
    except BaseException:
        claimed.release()
        raise
    return claimed


def _inherited(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def supervise(settings: Settings, command: str, processes: int, *, api: bool) -> int:
    """Prepare once, start `processes` children of `mrb <command>`, and wait; the exit
    status of the whole unit (0 when every child stopped cleanly on a signal)."""
    from broker.storage.database import upgrade

    claimed = claim(settings, api=api, worker=not api, kafka_needed=False, command=f"mrb {command}")
    try:
        if claimed.metrics is not None:  # the children serve metrics, each on its own port
            claimed.metrics.close()
            claimed.metrics = None
        if not api and claimed.http is not None:  # each worker child has its own health port
            claimed.http.close()
            claimed.http = None
        private_sqlite_file(settings.resolved_database_url)
        asyncio.run(upgrade(settings.resolved_database_url, settings.database_schema))
        keep: Sequence[int] = ()
        args = [command]
        if api and claimed.http is not None:
            fd = claimed.http.fileno()
            os.set_inheritable(fd, True)
            keep = (fd,)
            args += ["--listen-fd", str(fd)]
        return _run_children(args, processes, keep)
    finally:
        claimed.release()


def _run_children(args: list[str], processes: int, keep: Sequence[int]) -> int:
    children: list[subprocess.Popen[bytes]] = []
    asked_to_stop = False  # by a signal to the parent, not by a child stopping on its own

    def stop_children() -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal asked_to_stop
        asked_to_stop = True
        stop_children()

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(processes):
            children.append(
                subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                    [sys.executable, "-m", "broker.cli", *args, "--child", str(index)],
                    pass_fds=tuple(keep),
                )
            )
        while all(c.poll() is None for c in children):
            time.sleep(0.2)
        if not asked_to_stop:  # one stopped on its own: the unit stops
            stop_children()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes: list[int] = [c.returncode for c in children]
    if asked_to_stop and all(c == 0 for c in codes):
        return 0
    return max(1, *(abs(c) for c in codes))  # a child stopped on its own, or stopped badly
