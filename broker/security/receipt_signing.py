"""The broker's receipt key: every receipt on mrb.receipts.v1 is signed (docs/security.md,
"Signed receipts").

An adapter erases a message from its outbox when the receipt arrives, so a receipt is an
order to delete a result at the hospital: anyone able to write the receipts topic could
otherwise lose results silently. The broker signs each receipt with its own Ed25519 key
(`MRB_DATA_DIR/keys/receipt-signing.key`, the 32-byte seed in hex like the other key
files) over `UTF-8(hospital id) 0x0A value` — the exact receipt bytes, bound to the
hospital whose adapter will act on it — and sends `mrb-key-id` and `mrb-signature`
(standard base64 with padding) as record headers. The public half is published for the
adapters in `keys/receipt-signing.pub` (`KID=BASE64` lines) and by `mrb keys
show-receipt-key`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from broker.security.keys import load_key
from mrb_wire import headers
from mrb_wire.signing import RECEIPT_KEYS_FILE, receipt_signed_bytes

RECEIPT_KEY_FILE = "receipt-signing.key"
RECEIPT_PUBLIC_FILE = RECEIPT_KEYS_FILE
KEY_ID_HEADER = headers.KEY_ID
SIGNATURE_HEADER = headers.SIGNATURE
# How many earlier receipt keys the public file keeps listed after a rotation: adapters
# that copy the file trust the new key and the one before it while workers restart.
PREVIOUS_KEYS_LISTED = 1


@dataclass(frozen=True)
class ReceiptSigner:
    """The broker's receipt private key and its id (derived from the public key)."""

    key_id: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)  # the id names it
    # The same key on libsodium, which signs in two thirds of OpenSSL's time here (one
    # receipt a message). Ed25519 signatures are deterministic: the bytes are the same.
    _signing: SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        object.__setattr__(self, "_signing", SigningKey(seed))

    @classmethod
    def from_seed(cls, seed: bytes) -> ReceiptSigner:
        private = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(key_id_of(_raw_public(private)), private)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(_raw_public(self.private_key)).decode()

    @property
    def public_entry(self) -> str:
        """`KID=BASE64`, as adapters take it (MRB_RECEIPT_PUBLIC_KEYS, --receipt-key)."""
        return f"{self.key_id}={self.public_b64}"

    def headers(self, hospital: str, value: bytes) -> list[tuple[str, bytes]]:
        """The record headers that sign `value` for `hospital`'s adapters."""
        signature = self._signing.sign(receipt_signed_bytes(hospital, value)).signature
        return [
            (KEY_ID_HEADER, self.key_id.encode()),
            (SIGNATURE_HEADER, base64.b64encode(signature)),
        ]


def key_id_of(raw_public: bytes) -> str:
    """`receipt-` and 12 hex digits of SHA-256 of the public key: every process holding
    the same key file names it alike, and a new key always gets a new id."""
    return "receipt-" + hashlib.sha256(raw_public).hexdigest()[:12]


def load_receipt_signer(keys_dir: Path, *, create: bool) -> ReceiptSigner:
    """The broker's receipt key; created when missing only where `create` (the embedded
    set-up, `mrb keys init`), else MissingKey naming the fix. The public file is (re)written
    when it does not list this key."""
    signer = ReceiptSigner.from_seed(load_key(keys_dir / RECEIPT_KEY_FILE, create=create))
    published = published_entries(keys_dir)
    if signer.public_entry not in published:
        _write_public(keys_dir, [signer.public_entry, *published][: 1 + PREVIOUS_KEYS_LISTED])
    return signer


def rotate_receipt_key(keys_dir: Path) -> tuple[ReceiptSigner, ReceiptSigner]:
    """A new receipt key replaces the current one (which must exist); the public file lists
    the new key and the previous one. Running workers keep signing with the key they loaded
    until they restart. Returns (old, new)."""
    old = load_receipt_signer(keys_dir, create=False)
    seed = secrets.token_bytes(32)
    new = ReceiptSigner.from_seed(seed)
    _replace_private(keys_dir / RECEIPT_KEY_FILE, seed.hex() + "\n")
    rest = [e for e in published_entries(keys_dir) if e != new.public_entry]
    _write_public(keys_dir, [new.public_entry, *rest][: 1 + PREVIOUS_KEYS_LISTED])
    return old, new


def published_entries(keys_dir: Path) -> list[str]:
    """The `KID=BASE64` lines of keys/receipt-signing.pub, newest first (empty if none)."""
    path = keys_dir / RECEIPT_PUBLIC_FILE
    if not path.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def _write_public(keys_dir: Path, entries: list[str]) -> None:
    text = (
        "# mrb broker receipt keys (public): give this file to the adapters, as\n"
        "# MRB_DATA_DIR/keys/receipt-signing.pub or MRB_RECEIPT_PUBLIC_KEYS. Newest first.\n"
        + "".join(f"{e}\n" for e in entries)
    )
    _replace_private(keys_dir / RECEIPT_PUBLIC_FILE, text)


def _replace_private(path: Path, text: str) -> None:
    """Write `text` to `path` in one step (readers see the old file or the new one),
    owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
