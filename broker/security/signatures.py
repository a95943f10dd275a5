"""Verifying hospital signatures on incoming messages (Ed25519, DESIGN.md bytes).

Verification runs on libsodium (PyNaCl): it takes half the time of OpenSSL's here (about
70 µs against 135 µs a message), and it was the largest single cost of ingest
(docs/performance.md). It is also the stricter of the two: it refuses non-canonical
signatures and small-order keys, which no honest signer produces. Adapters still sign
with `cryptography`; Ed25519 is one algorithm, so either verifies the other's signatures.
"""

from __future__ import annotations

import base64
import binascii
import functools

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from mrb_wire.signing import signed_bytes

__all__ = ["public_key", "signed_bytes", "verify"]


@functools.lru_cache(maxsize=1024)  # every message names one of a few registered keys
def public_key(b64: str) -> VerifyKey:
    """Parse a registered key (base64 of the 32 raw bytes); ValueError if it is not one."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ValueError("public key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(raw)}")
    return VerifyKey(raw)


def verify(key: VerifyKey, signature_b64: str, data: bytes) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(data, signature)
    except (binascii.Error, ValueError, CryptoError):  # nacl's ValueError is a ValueError
        return False
    return True
