"""A DICOM Storage SCP (C-STORE, PS3.4 Annex B) and Verification SCP (C-ECHO).

Each received object's header is read from the received bytes (never decoded past
Pixel Data, never written anywhere) and handed to `on_instance`, usually
StudyCollector.add. The C-STORE response tells the PACS what happened (PS3.4 B.2.3):

- 0x0000 Success: the instance was taken;
- 0xC000 Error, cannot understand: the object itself is unusable (unreadable,
  truncated, no Study UID or Patient ID, another patient's study); sending it again
  will not help until it is fixed at the source, and the Error Comment says which;
- 0xA700 Refused, out of resources: `on_instance` failed (or timed out); the PACS
  should send it again later.

Every transfer syntax is accepted (JPEG, JPEG 2000, RLE, big endian...): only the
header is read, so a PACS never has to decompress for mrb.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from adapters.dicom.headers import DicomInputError, InstanceHeaders, read_headers

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700

InstanceCallback = Callable[[InstanceHeaders], Awaitable[None] | None]


@dataclass(frozen=True)
class ScpSettings:
    """Where and as whom the SCP listens. Port 0 picks a free port (see `StoreScp.port`)."""

    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "MRB"
    require_called_ae_title: bool = False  # refuse associations addressed to another AE
    callback_timeout: float = 30.0  # seconds `on_instance` may take before 0xA700
    fallback_charset: str | None = None  # e.g. GB18030 for objects without (0008,0005)


class StoreScp:
    """The listening Storage SCP: `start()`, then `stop()` (also a context manager)."""

    def __init__(
        self,
        settings: ScpSettings,
        on_instance: InstanceCallback,
        *,
        zone: tzinfo,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.settings = settings
        self.zone = zone
        self._on_instance = on_instance
        self._loop = loop  # where an async `on_instance` runs (the caller's loop)
        self._ae = _application_entity(settings)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def start(self) -> StoreScp:
        """Listen without blocking (pynetdicom serves associations in threads)."""
        if self._server is None:
            self._server = self._ae.start_server(
                (self.settings.host, self.settings.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
            )
            logger.info(
                "DICOM SCP %s listening on %s:%s",
                self.settings.ae_title,
                self.settings.host,
                self.port,
            )
        return self

    def stop(self) -> None:
        """Abort open associations and stop listening."""
        self._ae.shutdown()
        self._server = None

    def __enter__(self) -> StoreScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle_store(self, event: Event) -> int | Dataset:
        """EVT_C_STORE: read the header, pass it on, answer with a status."""
        try:
            headers = read_headers(
                event.encoded_dataset(include_meta=True),
                zone=self.zone,
                fallback_charset=self.settings.fallback_charset,
            )
        except DicomInputError as exc:
            logger.warning("C-STORE refused: %s", exc.code.value)
            return failure(CANNOT_UNDERSTAND, f"{exc.code.value}: {exc.detail}")
        try:
            self._deliver(headers)
        except DicomInputError as exc:
            logger.warning("C-STORE refused: %s", exc.code.value)
            return failure(CANNOT_UNDERSTAND, f"{exc.code.value}: {exc.detail}")
        except Exception as exc:
            logger.warning("C-STORE not taken, the PACS should retry: %s", type(exc).__name__)
            return failure(OUT_OF_RESOURCES, f"MRB_NOT_STORED: {type(exc).__name__}; retry")
        return SUCCESS

    def _deliver(self, headers: InstanceHeaders) -> None:
        result = self._on_instance(headers)
        if not inspect.isawaitable(result):
            return
        timeout = self.settings.callback_timeout
        if self._loop is None:
            asyncio.run(asyncio.wait_for(_awaited(result), timeout))
            return
        future = asyncio.run_coroutine_threadsafe(_awaited(result), self._loop)
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


async def _awaited(result: Awaitable[Any]) -> None:
    await result


def failure(status: int, comment: str) -> Dataset:
    """A C-STORE response status with its Error Comment (0000,0902), LO: 64 characters."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = comment if len(comment) <= 64 else comment[:64].rsplit(" ", 1)[0]
    return ds


def _application_entity(settings: ScpSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.require_called_aet = settings.require_called_ae_title
    # Every storage SOP class in every transfer syntax: only headers are read.
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    return ae


def start_scp(
    settings: ScpSettings,
    on_instance: InstanceCallback,
    *,
    zone: tzinfo,
    loop: asyncio.AbstractEventLoop | None = None,
) -> StoreScp:
    """Start a Storage SCP in the background; stop it with `.stop()`."""
    return StoreScp(settings, on_instance, zone=zone, loop=loop).start()
