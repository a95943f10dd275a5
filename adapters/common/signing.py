"""Ed25519 signing of mrb.results.v1 messages (DESIGN.md, Kafka contract).

The signature covers exactly `UTF-8(hospital id) 0x0A UTF-8(message id) 0x0A value`, so
neither the payload nor the headers that say whose and which message it is can be changed.
"""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mrb_wire.signing import signed_bytes


def sign(private_key: Ed25519PrivateKey, hospital: str, message_id: str, value: bytes) -> str:
    """Standard base64 (with padding) of the Ed25519 signature."""
    return base64.b64encode(private_key.sign(signed_bytes(hospital, message_id, value))).decode()


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


class SigningKeyMissing(RuntimeError):
    """The hospital has no signing key in this adapter's data dir."""


def new_key_id(hospital: str) -> str:
    return f"{hospital}-{datetime.now(UTC):%Y%m%d%H%M%S}"


def create_key(keys_dir: Path, hospital: str, key_id: str | None = None) -> tuple[str, str]:
    """Write a new private key (owner-only PEM); return (key id, public key base64)."""
    kid = key_id or new_key_id(hospital)
    folder = keys_dir / "hospitals" / hospital
    folder.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(folder / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = public_key_b64(private)
    (folder / f"{kid}.pub").write_text(public + "\n")
    return kid, public


def current_key(keys_dir: Path, hospital: str) -> tuple[str, Ed25519PrivateKey]:
    """The newest key (ids sort by creation time) for signing new messages."""
    folder = keys_dir / "hospitals" / hospital
    pems = sorted(folder.glob("*.pem"))
    if not pems:
        raise SigningKeyMissing(
            f"no signing key for {hospital} in {folder}: run `mrb keys init --hospital "
            f"{hospital}` and register its public key at the broker (`mrb hospital key add`)"
        )
    key = serialization.load_pem_private_key(pems[-1].read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyMissing(f"{pems[-1]} is not an Ed25519 private key")
    return pems[-1].stem, key
