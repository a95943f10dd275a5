"""The exact bytes each side signs (DESIGN.md, "Kafka contract"; docs/security.md)."""

from __future__ import annotations


def signed_bytes(hospital: str, message_id: str, value: bytes) -> bytes:
    """What a hospital signs: `UTF-8(hospital id) 0x0A UTF-8(message id) 0x0A value`, so
    neither the payload nor the headers saying whose and which message it is can change."""
    return hospital.encode() + b"\n" + message_id.encode() + b"\n" + value


def receipt_signed_bytes(hospital: str, value: bytes) -> bytes:
    """What the broker signs on a receipt: `UTF-8(hospital id) 0x0A value`, binding the
    receipt to the hospital whose adapter will erase the message on it."""
    return hospital.encode() + b"\n" + value


# The broker publishes its receipt keys here (`KID=BASE64` lines); adapters read it.
RECEIPT_KEYS_FILE = "receipt-signing.pub"
