"""The Kafka message envelope of mrb.results.v1 (DESIGN.md, Kafka contract)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.common.signing import sign

RESULTS_TOPIC = "mrb.results.v1"
RECEIPTS_TOPIC = "mrb.receipts.v1"
FHIR_CONTENT_TYPE = "application/fhir+json; fhirVersion=4.0"


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
            ("mrb-hospital", self.hospital.encode()),
            ("mrb-message-id", self.message_id.encode()),
            ("mrb-key-id", self.key_id.encode()),
            ("mrb-signature", self.signature.encode()),
            ("content-type", self.content_type.encode()),
        ]


def routing_key(secret: bytes, hospital: str, patient_hint: str) -> bytes:
    """An opaque per-patient key: keeps one patient's messages in order, reveals nothing.

    Keyed (HMAC) because a plain hash of an 18-digit ID number can be brute-forced.
    """
    digest = hmac.new(secret, f"{hospital}|{patient_hint}".encode(), hashlib.sha256)
    return digest.hexdigest()[:32].encode()


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
