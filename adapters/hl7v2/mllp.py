"""MLLP (HL7 v2 Minimal Lower Layer Protocol, release 1): framing and an asyncio server.

A frame is 0x0B <message bytes> 0x1C 0x0D. The decoder is pure and incremental: feed
it whatever a read returned (half a frame, several frames) and it hands back complete
messages; bytes between frames are ignored; a frame larger than the limit is reported
(with its first bytes, so the ACK can still name the message) and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.common.peers import (
    HANDSHAKE_SECONDS,
    PeerAllowlist,
    client_certificate,
    log_connection,
    peer_text,
)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024  # as MRB_MAX_MESSAGE_BYTES for the FHIR it becomes
_HEAD_BYTES = 4096

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[bytes | None]]
OversizeHandler = Callable[["Oversize"], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Oversize:
    """A frame over the limit: its first bytes (the MSH) and how many bytes were seen."""

    head: bytes
    size: int


def frame(message: bytes) -> bytes:
    """Wrap one message for the wire."""
    return START_BLOCK + message + END_BLOCK


class MllpDecoder:
    """Incremental MLLP decoder: `feed()` returns complete frames (or Oversize events)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._discarding: Oversize | None = None  # inside an oversize frame

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        self._buffer += data
        while self._buffer:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start == -1:
                    self._buffer.clear()  # noise between frames
                    break
                del self._buffer[: start + 1]
                self._in_frame = True
            end = self._buffer.find(END_BLOCK)
            if self._discarding is not None:
                if end == -1:
                    keep = self._buffer[-1:] if self._buffer.endswith(b"\x1c") else b""
                    self._discarding = Oversize(
                        self._discarding.head, self._discarding.size + len(self._buffer) - len(keep)
                    )
                    self._buffer[:] = keep
                    break
                out.append(Oversize(self._discarding.head, self._discarding.size + end))
                self._discarding = None
                self._in_frame = False
                del self._buffer[: end + len(END_BLOCK)]
                continue
            if end == -1:
                if len(self._buffer) > self.max_frame_bytes:
                    self._discarding = Oversize(bytes(self._buffer[:_HEAD_BYTES]), 0)
                    continue
                break
            if end > self.max_frame_bytes:
                out.append(Oversize(bytes(self._buffer[:_HEAD_BYTES]), end))
            else:
                out.append(bytes(self._buffer[:end]))
            del self._buffer[: end + len(END_BLOCK)]
            self._in_frame = False
        return out

    @property
    def buffered(self) -> int:
        """Bytes held (at most the limit plus one read, even inside an oversize frame)."""
        return len(self._buffer)

    @property
    def pending(self) -> bool:
        """True while a frame has started but not ended (a connection closing mid-frame)."""
        return self._in_frame


async def serve_mllp(
    host: str,
    port: int,
    handler: Handler,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    on_oversize: OversizeHandler | None = None,
    peers: PeerAllowlist | None = None,
    tls: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Listen for MLLP; each message goes to `handler`, whose ACK is framed and sent back.

    Only `peers` may connect (default: loopback only); anyone else is disconnected before
    a byte is read. With `tls`, the handshake follows that check, and a peer that fails
    it (plain text, no or an untrusted client certificate) is disconnected likewise.

    Messages on one connection are handled one at a time, in order. The handler stores
    the message durably before returning its ACK; returning None sends nothing (e.g.
    enhanced mode with MSH-15 NE). If the handler raises, no ACK is sent and the
    connection is closed, so the sender resends: nothing is acknowledged unstored.
    """
    allowed = peers if peers is not None else PeerAllowlist.parse()

    async def admitted(writer: asyncio.StreamWriter) -> bool:
        address = writer.get_extra_info("peername")
        peer = peer_text(address)
        if not address or not allowed.allows(str(address[0])):
            log_connection("mllp", peer, accepted=False, reason="address not allowed")
            return False
        if tls is not None:
            try:
                await writer.start_tls(tls, ssl_handshake_timeout=HANDSHAKE_SECONDS)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                reason = f"TLS handshake failed ({type(exc).__name__})"
                log_connection("mllp", peer, accepted=False, reason=reason)
                return False
        log_connection(
            "mllp",
            peer,
            accepted=True,
            reason="address allowed" + (", TLS" if tls is not None else ""),
            client_cert=client_certificate(writer.get_extra_info("peercert")),
        )
        return True

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await admitted(writer):
            writer.transport.abort()  # nothing read, nothing answered
            return
        decoder = MllpDecoder(max_frame_bytes)
        try:
            while data := await reader.read(65536):
                for item in decoder.feed(data):
                    if isinstance(item, Oversize):
                        logger.warning("MLLP frame of %d bytes over the limit", item.size)
                        reply = await on_oversize(item) if on_oversize else None
                    else:
                        reply = await handler(item)
                    if reply is not None:
                        writer.write(frame(reply))
                        await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the peer went away; an unacknowledged message will be resent
        except Exception as exc:  # the handler failed: no ACK, the sender resends
            logger.error(
                "HL7 message handling failed (%s); closing the connection", type(exc).__name__
            )
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    return await asyncio.start_server(connection, host, port)
