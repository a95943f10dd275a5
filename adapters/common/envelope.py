"""The Kafka message envelope of mrb.results.v1 (DESIGN.md, Kafka contract)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.common.signing import sign
from mrb_wire import headers
from mrb_wire.headers import FHIR_CONTENT_TYPE
from mrb_wire.routing import routing_key
from mrb_wire.topics import RECEIPTS as RECEIPTS_TOPIC
from mrb_wire.topics import RESULTS as RESULTS_TOPIC

__all__ = ["FHIR_CONTENT_TYPE", "RECEIPTS_TOPIC", "RESULTS_TOPIC", "OutgoingMessage", "Signer"]


@dataclass(frozen=True)
class OutgoingMessage:
    hospital: str
    value: bytes
    key: bytes
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    content_type: str = FHIR_CONTENT_TYPE
    key_id: str = ""  # set by signed()
    signature: str = ""

    def signed(self, key_id: str, private_key: Ed25519PrivateKey) -> OutgoingMessage:
        """This message with mrb-key-id and mrb-signature set."""
        return replace(
            self,
            key_id=key_id,
            signature=sign(private_key, self.hospital, self.message_id, self.value),
        )

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (headers.HOSPITAL, self.hospital.encode()),
            (headers.MESSAGE_ID, self.message_id.encode()),
            (headers.KEY_ID, self.key_id.encode()),
            (headers.SIGNATURE, self.signature.encode()),
            (headers.CONTENT_TYPE, self.content_type.encode()),
        ]


@dataclass(frozen=True)
class Signer:
    """What an adapter signs and keys its messages with (one hospital)."""

    hospital: str
    key_id: str
    private_key: Ed25519PrivateKey = field(repr=False)
    routing_secret: bytes = field(repr=False)  # keys per patient, opaque to Kafka

    def message(
        self, value: bytes, patient_hint: str, *, message_id: str | None = None
    ) -> OutgoingMessage:
        """Keyed and signed; `message_id` fixed when a resend must keep its id."""
        key = routing_key(self.routing_secret, self.hospital, patient_hint)
        message = OutgoingMessage(self.hospital, value, key)
        if message_id is not None:
            message = replace(message, message_id=message_id)
        return message.signed(self.key_id, self.private_key)
