"""What an adapter takes from the installation it runs in, and how a run stops early.

The adapters never import the broker: `mrb adapter …` (broker/cli/adapter_cmd.py) reads
the MRB_ settings and hands each adapter a `Site` — folders, the Kafka address, and the
few services of the installation an adapter uses (key files, logging, the metrics
endpoint, a port check) — then maps `Stop` and `ListenerBusy` to its exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

# Everything an adapter run says goes to standard output, one line per event.
console = Console(soft_wrap=True)

# Where the adapters keep their outbox: in the data folder, beside the broker's files.
OUTBOX_FILE = "adapter-outbox.db"


class Stop(Exception):
    """The run ends here with exit code `code`; what went wrong was printed already."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class ListenerBusy(Exception):
    """A listener could not bind HOST:PORT (another process took it since the check at
    start); `option` is what the operator changes."""

    def __init__(self, host: str, port: int, option: str, reason: str) -> None:
        super().__init__(f"{host}:{port} ({option}): {reason}")
        self.host, self.port, self.option, self.reason = host, port, option, reason


@dataclass(frozen=True)
class Site:
    """The installation an adapter runs in (built from the MRB_ settings by the CLI)."""

    data_dir: Path
    keys_dir: Path
    bootstrap: str  # the Kafka bootstrap servers to publish to
    # A 32-byte secret kept in the named file, created (owner-only) when missing.
    secret: Callable[[Path], bytes] = field(repr=False)
    # Per-connection log lines for a long-running listener or poller.
    start_logging: Callable[[], None] = field(repr=False)
    # TLS/SASL keyword arguments for the Kafka clients; asked for when delivering (a bad
    # setting fails the delivery, which says so, not the start).
    kafka_options: Callable[[], Mapping[str, Any]] = field(repr=False)
    # The outbox's metrics, served while the block runs (a no-op when switched off).
    metrics: Callable[[], AbstractContextManager[object]] = field(repr=False)
    # Raises (an exception of the caller's, which it maps) when HOST:PORT cannot be bound.
    ensure_free: Callable[[str, int, str], None] = field(repr=False)

    @property
    def outbox_file(self) -> Path:
        return self.data_dir / OUTBOX_FILE

    def outbox_key(self) -> bytes:
        """The key the outbox (and the DICOM spool) seal their rows with."""
        return self.secret(self.keys_dir / "outbox.key")

    def routing_secret(self) -> bytes:
        """The secret behind the per-patient routing key (mrb_wire.routing)."""
        return self.secret(self.keys_dir / "adapter-routing.key")


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set `stop` (a listener or poller finishes what it holds)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
