"""Receipts from mrb.receipts.v1, and the check that they come from the broker.

A receipt settles a message in the outbox, which then erases it: an unchecked receipt
would let anyone able to write the receipts topic lose a hospital's results silently (a
forged `indexed`) or misreport them (a forged `rejected`). The broker signs every receipt
with its receipt key (Ed25519 over `UTF-8(hospital id) 0x0A value`; headers `mrb-key-id`
and `mrb-signature`, standard base64). The adapter trusts the public keys it is given —
`MRB_RECEIPT_PUBLIC_KEYS` / `--receipt-key` (`KID=BASE64`, comma-separated) and the file
`MRB_DATA_DIR/keys/receipt-signing.pub` (one `KID=BASE64` a line, as the broker writes
it) — and refuses anything else: unsigned, signed with a key it does not trust,
mis-signed, or a receipt for another hospital. With no key configured nothing is
trusted, so nothing settles: messages stay pending and are resent (docs/security.md,
"Signed receipts").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mrb_wire import headers
from mrb_wire.signing import RECEIPT_KEYS_FILE, receipt_signed_bytes

# The broker writes this file in its keys dir; an adapter reads it from its own.
__all__ = ["RECEIPT_KEYS_FILE", "Receipt", "ReceiptTrust"]
KEY_ID_HEADER = headers.KEY_ID
SIGNATURE_HEADER = headers.SIGNATURE
OUTCOMES = ("indexed", "duplicate", "rejected")
ENV_SETTING = "MRB_RECEIPT_PUBLIC_KEYS"

# Why a receipt was refused (counted per hospital and reason by the outbox).
NO_KEY_CONFIGURED = "no-key-configured"
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown-key"
BAD_SIGNATURE = "bad-signature"
OTHER_HOSPITAL = "other-hospital"
MALFORMED = "malformed"

_KEY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Receipt:
    message_id: str
    outcome: str  # indexed | duplicate | rejected
    error_code: str | None
    error_detail: str | None
    results: int
    hospital: str | None = None
    key_id: str | None = None  # the broker receipt key that signed it

    @classmethod
    def from_json(cls, raw: bytes, *, key_id: str | None = None) -> Receipt:
        """Parse a receipt's value; ValueError (or KeyError/TypeError) if it is not one."""
        d: dict[str, Any] = json.loads(raw)
        outcome, message_id = d["outcome"], d["message_id"]
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if not isinstance(message_id, str):
            raise ValueError("no message id")
        return cls(
            message_id,
            outcome,
            d.get("error_code"),
            d.get("error_detail"),
            int(d.get("results") or 0),
            d.get("hospital"),
            key_id,
        )


@dataclass(frozen=True)
class Refusal:
    """A receipt for one of our pending messages that was not believed."""

    message_id: str
    hospital: str  # the hospital of our pending message
    reason: str
    detail: str
    key_id: str | None = None


class ReceiptRefused(Exception):
    def __init__(self, reason: str, detail: str, key_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.key_id = key_id


class ReceiptKeyError(ValueError):
    """A configured receipt key is not `KID=BASE64` of an Ed25519 public key."""


def parse_entries(text: str, source: str) -> dict[str, Ed25519PublicKey]:
    """`KID=BASE64` entries separated by commas, spaces or lines (`#` starts a comment)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for line in text.splitlines():
        for entry in re.split(r"[,\s]+", line.split("#", 1)[0].strip()):
            if not entry:
                continue
            kid, sep, b64 = entry.partition("=")
            if not sep or not _KEY_ID.match(kid):
                raise ReceiptKeyError(f"{source}: {entry[:40]!r} is not KID=BASE64")
            try:
                raw = base64.b64decode(b64, validate=True)
            except binascii.Error:
                raise ReceiptKeyError(f"{source}: the key of {kid} is not base64") from None
            if len(raw) != 32:
                raise ReceiptKeyError(
                    f"{source}: the key of {kid} has {len(raw)} bytes, an Ed25519 public key 32"
                )
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


class ReceiptTrust:
    """The broker receipt public keys an adapter trusts (several during a rotation)."""

    def __init__(
        self, keys: Mapping[str, Ed25519PublicKey] | None = None, sources: Sequence[str] = ()
    ) -> None:
        self._keys = dict(keys or {})
        self.sources = tuple(sources)

    @classmethod
    def configured(cls, entries: Iterable[str] = (), file: Path | None = None) -> ReceiptTrust:
        """The union of `KID=BASE64` entries (option or environment) and the keys file,
        if it exists. ReceiptKeyError names the source of a bad entry."""
        keys: dict[str, Ed25519PublicKey] = {}
        sources: list[str] = []
        given = ",".join(entries)
        if given.strip():
            keys.update(parse_entries(given, f"{ENV_SETTING}/--receipt-key"))
            sources.append(f"{ENV_SETTING}/--receipt-key")
        if file is not None and file.exists():
            from_file = parse_entries(file.read_text(), str(file))
            for kid, key in from_file.items():
                if kid in keys and keys[kid].public_bytes_raw() != key.public_bytes_raw():
                    raise ReceiptKeyError(f"{file}: {kid} differs from the configured key")
                keys[kid] = key
            if from_file:
                sources.append(str(file))
        return cls(keys, sources)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(
        self, value: bytes | None, headers: Sequence[tuple[str, bytes]], hospital: str
    ) -> Receipt:
        """The receipt, if the broker signed exactly these bytes for `hospital` (the
        hospital of our pending message) with a trusted key; else ReceiptRefused."""
        found = dict(headers)
        kid = _text(found.get(KEY_ID_HEADER))
        signature = _text(found.get(SIGNATURE_HEADER))
        if not self._keys:
            raise ReceiptRefused(
                NO_KEY_CONFIGURED,
                f"no broker receipt key is configured (set {ENV_SETTING} or put the broker's "
                f"{RECEIPT_KEYS_FILE} in MRB_DATA_DIR/keys)",
                kid,
            )
        if not value:
            raise ReceiptRefused(MALFORMED, "empty receipt", kid)
        if not kid or not signature:
            raise ReceiptRefused(UNSIGNED, "no mrb-key-id/mrb-signature header", kid)
        key = self._keys.get(kid)
        if key is None:
            raise ReceiptRefused(
                UNKNOWN_KEY, f"signed with {kid!r}, not a trusted receipt key", kid
            )
        try:
            claimed = json.loads(value).get("hospital")
        except (ValueError, AttributeError):
            raise ReceiptRefused(MALFORMED, "not a JSON object", kid) from None
        if claimed != hospital:
            raise ReceiptRefused(
                OTHER_HOSPITAL, f"a receipt for {claimed!r}, our message is {hospital}'s", kid
            )
        try:
            key.verify(
                base64.b64decode(signature, validate=True), receipt_signed_bytes(hospital, value)
            )
        except (binascii.Error, ValueError, InvalidSignature):
            raise ReceiptRefused(
                BAD_SIGNATURE, f"signature does not verify with {kid}", kid
            ) from None
        try:
            return Receipt.from_json(value, key_id=kid)
        except (ValueError, KeyError, TypeError) as exc:
            raise ReceiptRefused(MALFORMED, f"signed but not a receipt: {exc!r}", kid) from None


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("ascii").strip() or None
    except UnicodeDecodeError:
        return None
