"""Hospital signatures as ingest verifies them (libsodium), over what adapters sign
(`cryptography`, mrb_wire's bytes): honest signatures pass, anything else is refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.security import signatures

DATA = signatures.signed_bytes("H001", "m-1", b'{"resourceType": "Bundle"}')
ORDER = 2**252 + 27742317777372353535851937790883648493  # the group order L


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _signer() -> tuple[Ed25519PrivateKey, str]:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, _b64(raw)


def test_an_adapters_signature_verifies() -> None:
    private, public = _signer()
    assert signatures.verify(signatures.public_key(public), _b64(private.sign(DATA)), DATA)


def test_other_bytes_or_another_key_are_refused() -> None:
    private, public = _signer()
    signature = _b64(private.sign(DATA))
    key = signatures.public_key(public)
    assert not signatures.verify(key, signature, DATA + b" ")
    other, _ = _signer()
    assert not signatures.verify(key, _b64(other.sign(DATA)), DATA)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:63],  # short
        lambda sig: sig + b"\0",  # long
        lambda sig: b"",
    ],
    ids=["short", "long", "empty"],
)
def test_a_signature_of_the_wrong_length_is_refused(mangle: object) -> None:
    private, public = _signer()
    signature = mangle(private.sign(DATA))  # type: ignore[operator]
    assert not signatures.verify(signatures.public_key(public), _b64(signature), DATA)


def test_text_that_is_not_base64_is_refused() -> None:
    _, public = _signer()
    assert not signatures.verify(signatures.public_key(public), "not base64!", DATA)


def test_a_non_canonical_signature_is_refused() -> None:
    """S + L verifies the same equation; a strict verifier refuses it (malleability)."""
    private, public = _signer()
    sig = private.sign(DATA)
    s = int.from_bytes(sig[32:], "little") + ORDER
    assert s < 2**256
    assert not signatures.verify(
        signatures.public_key(public), _b64(sig[:32] + s.to_bytes(32, "little")), DATA
    )


def test_a_small_order_key_verifies_nothing() -> None:
    """With the neutral point as key and as R, and S = 0, the verification equation holds
    for every message; libsodium refuses such keys."""
    neutral = b"\x01" + b"\x00" * 31
    key = signatures.public_key(_b64(neutral))
    assert not signatures.verify(key, _b64(neutral + b"\x00" * 32), DATA)


@pytest.mark.parametrize(
    ("text", "why"),
    [("not base64!", "not valid base64"), (_b64(b"\x01" * 31), "32 bytes, not 31")],
    ids=["text", "31-bytes"],
)
def test_a_malformed_public_key_is_a_value_error(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        signatures.public_key(text)
