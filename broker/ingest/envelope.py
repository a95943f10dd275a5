"""The envelope of a message on mrb.results.v1: its headers and its signature, checked
before anything reads the value (DESIGN.md, "Kafka contract"). Pure: the registry and the
hospitals' keys are handed in."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from broker.domain.rejections import RejectCode, Rejected
from broker.security import signatures
from mrb_wire import headers


@dataclass(frozen=True)
class InboundMessage:
    value: bytes
    headers: dict[str, bytes]
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            return None


class SigningKey(Protocol):
    @property
    def public_key(self) -> str: ...

    @property
    def revoked_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class Envelope:
    hospital: str  # registered
    message_id: str  # canonical UUID text


def message_id_of(message: InboundMessage) -> str | None:
    """The canonical message id, or None when the header is missing or not a UUID."""
    try:
        return str(uuid.UUID(message.header(headers.MESSAGE_ID) or ""))
    except ValueError:
        return None


def check_envelope(
    message: InboundMessage,
    registry: Mapping[str, object],
    keys: Mapping[tuple[str, str], SigningKey],
    *,
    require_signatures: bool,
) -> Envelope:
    """Whose message this is and which, or Rejected naming what is wrong with it."""
    hospital = message.header(headers.HOSPITAL)
    message_id = message.header(headers.MESSAGE_ID)
    if not hospital:
        raise Rejected(RejectCode.MISSING_HEADER, f"header {headers.HOSPITAL} is missing")
    if not message_id:
        raise Rejected(RejectCode.MISSING_HEADER, f"header {headers.MESSAGE_ID} is missing")
    canonical = message_id_of(message)
    if canonical is None:
        raise Rejected(
            RejectCode.INVALID_MESSAGE_ID,
            f"{headers.MESSAGE_ID} {message_id[:64]!r} is not a UUID",
        )
    if hospital not in registry:
        raise Rejected(
            RejectCode.UNKNOWN_HOSPITAL,
            f"hospital {hospital[:64]!r} is not registered; register it with `mrb hospital add`",
        )
    _check_signature(message, hospital, canonical, keys, require_signatures)
    return Envelope(hospital, canonical)


def _check_signature(
    message: InboundMessage,
    hospital: str,
    message_id: str,
    keys: Mapping[tuple[str, str], SigningKey],
    required: bool,
) -> None:
    key_id = message.header(headers.KEY_ID)
    signature = message.header(headers.SIGNATURE)
    if not required and not key_id and not signature:
        return
    if not key_id:
        raise Rejected(RejectCode.UNKNOWN_KEY, f"header {headers.KEY_ID} is missing")
    key = keys.get((hospital, key_id))
    if key is None:
        raise Rejected(
            RejectCode.UNKNOWN_KEY,
            f"key {key_id[:64]!r} is not registered for {hospital}; register it with "
            "`mrb hospital key add`",
        )
    if key.revoked_at is not None:
        raise Rejected(
            RejectCode.REVOKED_KEY,
            f"key {key_id} of {hospital} was revoked on {key.revoked_at:%Y-%m-%d}",
        )
    data = signatures.signed_bytes(hospital, message_id, message.value)
    if not signature or not signatures.verify(
        signatures.public_key(key.public_key), signature, data
    ):
        raise Rejected(
            RejectCode.BAD_SIGNATURE,
            f"mrb-signature does not match the message signed by {hospital} with {key_id}",
        )
