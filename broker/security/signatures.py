"""Verifying hospital signatures on incoming messages (Ed25519, DESIGN.md bytes)."""

from __future__ import annotations

import base64
import binascii
import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mrb_wire.signing import signed_bytes

__all__ = ["public_key", "signed_bytes", "verify"]


@functools.lru_cache(maxsize=1024)  # every message names one of a few registered keys
def public_key(b64: str) -> Ed25519PublicKey:
    """Parse a registered key (base64 of the 32 raw bytes); ValueError if it is not one."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ValueError("public key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(key: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, data)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
