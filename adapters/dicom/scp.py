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

Who may connect: only addresses in `allowed_peers` (default loopback), disconnected
before any DICOM byte is read otherwise; then TLS, if configured, with its handshake in
the connection's own thread; then the association is rejected (A-ASSOCIATE-RJ) unless it
is addressed to this AE title and, when `allowed_calling_ae_titles` is set, comes from
one of them. Each connection is logged once (adapters.common.peers).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import socketserver
import ssl
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from adapters.common.peers import (
    HANDSHAKE_SECONDS,
    PeerAllowlist,
    TlsFiles,
    client_certificate,
    log_connection,
    peer_text,
)
from adapters.dicom.headers import DicomInputError, InstanceHeaders, read_headers

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700

InstanceCallback = Callable[[InstanceHeaders], Awaitable[None] | None]

# A-ASSOCIATE-RJ: rejected-permanent, by the service user, with this diagnostic (PS3.8 9.3.4)
_PERMANENT, _SERVICE_USER = 0x01, 0x01
_CALLING_AE_NOT_RECOGNISED, _CALLED_AE_NOT_RECOGNISED = 0x03, 0x07


@dataclass(frozen=True)
class ScpSettings:
    """Where and as whom the SCP listens. Port 0 picks a free port (see `StoreScp.port`)."""

    host: str = "127.0.0.1"
    port: int = 11112
    ae_title: str = "MRB"
    require_called_ae_title: bool = True  # refuse associations addressed to another AE
    callback_timeout: float = 30.0  # seconds `on_instance` may take before 0xA700
    fallback_charset: str | None = None  # e.g. GB18030 for objects without (0008,0005)
    allowed_peers: tuple[str, ...] = ()  # CIDRs; empty: loopback only
    allowed_calling_ae_titles: tuple[str, ...] = ()  # empty: any AE at an allowed address
    tls: TlsFiles | None = None


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
        self.peers = PeerAllowlist.parse(settings.allowed_peers)
        self._tls = settings.tls.context() if settings.tls else None  # fails here, not later
        self._calling = frozenset(t.strip() for t in settings.allowed_calling_ae_titles)
        self._ae = _application_entity(settings)
        self._server: _GuardedServer | None = None
        # Associations whose request was logged; the rest are logged when they close.
        self._decided: weakref.WeakSet[Any] = weakref.WeakSet()
        self._decided_lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    def start(self) -> StoreScp:
        """Listen without blocking (pynetdicom serves associations in threads)."""
        if self._server is None:
            server = self._ae.make_server(
                (self.settings.host, self.settings.port),
                evt_handlers=[
                    (evt.EVT_REQUESTED, self.check_association),
                    (evt.EVT_CONN_CLOSE, self._closed),
                    (evt.EVT_C_STORE, self.handle_store),
                ],
                server_class=_GuardedServer,
                peers=self.peers,
                tls=self._tls,
            )
            threading.Thread(target=server.serve_forever, name="mrb-dicom-scp", daemon=True).start()
            self._server = cast(_GuardedServer, server)
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
        if self._server is not None:
            self._server.shutdown()
        self._server = None

    def __enter__(self) -> StoreScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check_association(self, event: Event) -> None:
        """EVT_REQUESTED: reject (A-ASSOCIATE-RJ) an unexpected called or calling AE title.

        The AE's require_called_aet / require_calling_aet say the same, as a second gate
        should this handler fail (pynetdicom logs and ignores handler errors).
        """
        assoc = event.assoc
        request = assoc.requestor.primitive
        if request is None:  # EVT_REQUESTED comes with the A-ASSOCIATE-RQ; never seen
            return
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        if self.settings.require_called_ae_title and called != self.settings.ae_title.strip():
            diagnostic, reason = _CALLED_AE_NOT_RECOGNISED, "called AE title is not this receiver"
        elif self._calling and calling not in self._calling:
            diagnostic, reason = _CALLING_AE_NOT_RECOGNISED, "calling AE title not allowed"
        else:
            diagnostic, reason = 0, "address and AE titles allowed"
        with self._decided_lock:
            self._decided.add(assoc)
        log_connection(
            "dicom",
            _peer(assoc),
            accepted=not diagnostic,
            reason=reason + (", TLS" if self._tls is not None and not diagnostic else ""),
            calling_ae=calling,
            called_ae=called,
            client_cert=client_certificate(_peer_certificate(assoc)),
        )
        if diagnostic:
            assoc.acse.send_reject(_PERMANENT, _SERVICE_USER, diagnostic)
            assoc.kill()  # as pynetdicom's own rejection: waits until the RJ has gone out

    def _closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: log a connection that closed without asking for an association."""
        with self._decided_lock:
            if event.assoc in self._decided:
                return
        log_connection(
            "dicom",
            _peer(event.assoc),
            accepted=False,
            reason="closed without an association request",
        )

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


_Request = socket.socket | tuple[bytes, socket.socket]  # socketserver's; TCP: a socket


class _GuardedServer(ThreadedAssociationServer):
    """The association server, checking the peer address before anything is read and
    doing the TLS handshake in the connection's thread (pynetdicom's own `ssl_context`
    handshakes in the accepting thread, where one stalled peer would block all others)."""

    def __init__(
        self, *args: Any, peers: PeerAllowlist, tls: ssl.SSLContext | None, **kwargs: Any
    ) -> None:
        self.peers = peers
        self.tls = tls
        super().__init__(*args, **kwargs)

    def verify_request(self, request: _Request, client_address: Any) -> bool:
        if self.peers.allows(str(client_address[0])):
            return True
        log_connection(
            "dicom", peer_text(client_address), accepted=False, reason="address not allowed"
        )
        return False  # socketserver closes the socket

    def finish_request(self, request: _Request, client_address: Any) -> None:
        if self.tls is not None and isinstance(request, socket.socket):
            timeout = request.gettimeout()
            try:
                request.settimeout(HANDSHAKE_SECONDS)
                request = self.tls.wrap_socket(request, server_side=True)
                request.settimeout(timeout)
            except (ssl.SSLError, OSError) as exc:
                reason = f"TLS handshake failed ({type(exc).__name__})"
                log_connection("dicom", peer_text(client_address), accepted=False, reason=reason)
                self.shutdown_request(request)
                return
        super().finish_request(request, client_address)

    def shutdown(self) -> None:
        # AssociationServer.shutdown also unlists itself from the AE's servers, which
        # only start_server lists it in.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _peer(assoc: Any) -> str:
    return peer_text((assoc.requestor.address, assoc.requestor.port))


def _peer_certificate(assoc: Any) -> Any:
    sock = getattr(assoc.dul.socket, "socket", None)
    return sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None


def _application_entity(settings: ScpSettings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.require_called_aet = settings.require_called_ae_title
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
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
