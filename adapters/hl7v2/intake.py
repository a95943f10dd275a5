"""Accept one HL7 v2 message: map it, store every Bundle in the outbox, answer an ACK.

The positive ACK (original AA, enhanced CA) goes out only after the outbox transaction
committed (SQLite, synchronous=FULL): once the LIS sees it, the results survive a crash
and are delivered by the adapter's usual outbox loop. Mapping errors answer AE/AR
(CE/CR in enhanced mode) with an ERR segment; a failed outbox write answers AE/CE 207.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import uuid
from dataclasses import dataclass, field

from adapters.common.envelope import OutgoingMessage, Signer
from adapters.common.outbox import Outbox
from adapters.fhir.source import patient_hint
from adapters.hl7v2.ack import AckOptions, accept_ack, encode
from adapters.hl7v2.charset import decode_message
from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.errors import Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.mllp import Handler, Oversize
from adapters.hl7v2.msh import MessageHeader, read_header
from adapters.hl7v2.oru import map_message

logger = logging.getLogger(__name__)
_MESSAGE_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:mrb:adapter:hl7v2:message-id")


@dataclass(frozen=True)
class Intake:
    """Everything needed to accept messages as one hospital on one interface."""

    outbox: Outbox
    signer: Signer  # the hospital's adapter key and routing secret
    config: InterfaceConfig = field(default_factory=InterfaceConfig)
    ack_options: AckOptions = field(default_factory=AckOptions)

    @property
    def hospital(self) -> str:
        return self.signer.hospital


@dataclass(frozen=True)
class Accepted:
    """What happened to one message: the ACK to send now and what was stored."""

    ack: bytes | None  # None: the sender asked for no accept ACK (MSH-15 NE/ER/SU)
    header: MessageHeader | None
    message_ids: tuple[str, ...]  # outbox ids, one per OBR group, in message order
    error: Hl7MappingError | None
    encoding: str  # the sender's character set, for a later application ACK


def accept(raw: bytes, intake: Intake, *, origin: str = "mllp") -> Accepted:
    """Map, store (one transaction) and answer; never raises for bad input."""
    try:
        mapped = map_message(raw, hospital=intake.hospital, config=intake.config)
    except Hl7MappingError as refused:
        header, encoding = _best_header(raw, intake.config)
        logger.info("HL7 message refused: %s (%s)", refused.code, refused.location or "message")
        return _answer(header, refused, encoding, (), intake.ack_options)
    messages = [_outgoing(r.value, intake) for r in mapped.reports]
    control = mapped.header.control_id or "no-control-id"
    try:
        intake.outbox.add(
            (m, f"hl7v2:{origin}:{control}#{r.group}")
            for m, r in zip(messages, mapped.reports, strict=True)
        )
    except (sqlite3.Error, OSError) as exc:
        failed = Hl7MappingError(
            Hl7ErrorCode.STORAGE,
            f"the adapter could not store the message ({type(exc).__name__}); send it again",
        )
        logger.error("outbox write failed: %s", type(exc).__name__)
        return _answer(mapped.header, failed, mapped.encoding, (), intake.ack_options)
    ids = tuple(m.message_id for m in messages)
    return _answer(mapped.header, None, mapped.encoding, ids, intake.ack_options)


async def accept_message(raw: bytes, intake: Intake, *, origin: str = "mllp") -> bytes | None:
    """`accept` for the MLLP server: the ACK bytes to send back (None: send nothing).

    The outbox is SQLite on this thread; its commit (an fsync) briefly blocks the loop,
    which also keeps messages of concurrent connections in arrival order.
    """
    return accept(raw, intake, origin=origin).ack


def mllp_handler(intake: Intake) -> Handler:
    """The handler to pass to `serve_mllp` for this interface."""

    async def handle(raw: bytes) -> bytes | None:
        return await accept_message(raw, intake)

    return handle


async def reject_oversize(item: Oversize, intake: Intake) -> bytes | None:
    """AR (CR in enhanced mode) for a frame over the size limit, naming the message."""
    header, encoding = _best_header(item.head, intake.config)
    err = Hl7MappingError(
        Hl7ErrorCode.PARSE,
        f"the message is larger than this interface accepts ({item.size} bytes)",
        hl7_error=207,
    )
    return _answer(header, err, encoding, (), intake.ack_options).ack


def _outgoing(value: bytes, intake: Intake) -> OutgoingMessage:
    return intake.signer.message(
        value, patient_hint(value), message_id=_message_id(intake.hospital, value)
    )


def _message_id(hospital: str, value: bytes) -> str:
    # The same Bundle resent by the LIS (it missed our ACK) gets the same id, and the
    # outbox's INSERT OR IGNORE keeps one copy.
    return str(uuid.uuid5(_MESSAGE_IDS, f"{hospital}|{hashlib.sha256(value).hexdigest()}"))


def _answer(
    header: MessageHeader | None,
    error: Hl7MappingError | None,
    encoding: str,
    ids: tuple[str, ...],
    options: AckOptions,
) -> Accepted:
    text = accept_ack(header, error, options)
    return Accepted(encode(text, encoding) if text else None, header, ids, error, encoding)


def _best_header(raw: bytes, config: InterfaceConfig) -> tuple[MessageHeader | None, str]:
    """The MSH of a message that failed, read as well as it can be, and its charset.

    When the bytes cannot be decoded, latin-1 reads every byte, so the ACK echoes the
    sender's MSH fields back byte for byte.
    """
    try:
        decoded = decode_message(raw, fallback=config.fallback_encoding)
        return read_header(decoded.text), decoded.encoding
    except Hl7MappingError:
        body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
        return read_header(body[:4096].decode("latin-1")), "latin-1"
