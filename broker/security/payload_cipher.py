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
    """Seals with the active key; opens with whichever key id a row names.

    Keys live in the data dir as payload-k<N>.key; the highest N is active. `mrb keys
    rotate` adds the next one; a running process that meets a key id it has not loaded
    reads the dir again, so rows re-sealed by a rotation stay readable without a restart.
    """

    def __init__(
        self, keys: dict[str, bytes], active_key_id: str, keys_dir: Path | None = None
    ) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active payload key {active_key_id!r} not loaded")
        self._keys = {kid: AESGCM(k) for kid, k in keys.items()}
        self._active = active_key_id
        self._dir = keys_dir

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys, key=key_order))

    @classmethod
    def from_dir(cls, keys_dir: Path, *, create: bool = True) -> PayloadCipher:
        """Load every payload-*.key in the dir; the highest-numbered is active.

        Rotate by adding payload-k2.key (`mrb keys rotate`): new rows use it, old rows
        still open with k1 until they are re-sealed.
        """
        keys = _read_dir(keys_dir)
        if not keys:
            load_key(keys_dir / "payload-k1.key", create=create)
            keys = _read_dir(keys_dir)
        return cls(keys, max(keys, key=key_order), keys_dir)

    def seal(self, plaintext: bytes, *, associated: bytes) -> Sealed:
        nonce = secrets.token_bytes(12)
        ct = self._keys[self._active].encrypt(nonce, plaintext, associated)
        return Sealed(self._active, ALGORITHM, nonce, ct)

    def open(self, sealed: Sealed, *, associated: bytes) -> bytes:
        if sealed.algorithm != ALGORITHM:
            raise ValueError(f"unsupported payload algorithm {sealed.algorithm}")
        if sealed.key_id not in self._keys and self._dir is not None:
            for kid, key in _read_dir(self._dir).items():  # rotated since this process began
                self._keys.setdefault(kid, AESGCM(key))
        return self._keys[sealed.key_id].decrypt(sealed.nonce, sealed.ciphertext, associated)


def key_order(key_id: str) -> tuple[int, str]:
    """k2 before k10: key ids compare by their number."""
    digits = key_id.lstrip("k")
    return (int(digits), key_id) if digits.isdigit() else (-1, key_id)


def _read_dir(keys_dir: Path) -> dict[str, bytes]:
    return {
        f.stem.removeprefix("payload-"): load_or_create_key(f)
        for f in keys_dir.glob("payload-*.key")
    }


def add_key(keys_dir: Path) -> str:
    """Create the next payload key (payload-k<N+1>.key) and return its id; it becomes the
    active key of every process that loads the dir from now on."""
    current = _read_dir(keys_dir)
    number = max((key_order(k)[0] for k in current), default=0) + 1
    kid = f"k{number}"
    load_or_create_key(keys_dir / f"payload-{kid}.key")
    return kid
