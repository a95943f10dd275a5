"""AES-256-GCM encryption of stored message payloads, with key ids so keys can rotate."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.security.keys import load_key, load_or_create_key

ALGORITHM = "A256GCM"  # JOSE name; stored per row so SM4-GCM can be added beside it


@dataclass(frozen=True)
class Sealed:
    key_id: str
    algorithm: str
    nonce: bytes
    ciphertext: bytes


class PayloadCipher:
    """Seals with the active key; opens with whichever key id a row names."""

    def __init__(self, keys: dict[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active payload key {active_key_id!r} not loaded")
        self._keys = {kid: AESGCM(k) for kid, k in keys.items()}
        self._active = active_key_id

    @classmethod
    def from_dir(cls, keys_dir: Path, *, create: bool = True) -> PayloadCipher:
        """Load every payload-*.key in the dir; the last name sorted is active.

        Rotate by adding payload-k2.key: new rows use it, old rows still open with k1.
        """
        files = sorted(keys_dir.glob("payload-*.key"))
        if not files:
            load_key(keys_dir / "payload-k1.key", create=create)
            files = sorted(keys_dir.glob("payload-*.key"))
        keys = {f.stem.removeprefix("payload-"): load_or_create_key(f) for f in files}
        return cls(keys, files[-1].stem.removeprefix("payload-"))

    def seal(self, plaintext: bytes, *, associated: bytes) -> Sealed:
        nonce = secrets.token_bytes(12)
        ct = self._keys[self._active].encrypt(nonce, plaintext, associated)
        return Sealed(self._active, ALGORITHM, nonce, ct)

    def open(self, sealed: Sealed, *, associated: bytes) -> bytes:
        if sealed.algorithm != ALGORITHM:
            raise ValueError(f"unsupported payload algorithm {sealed.algorithm}")
        return self._keys[sealed.key_id].decrypt(sealed.nonce, sealed.ciphertext, associated)
