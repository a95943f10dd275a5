"""Signed receipts: the broker's receipt key, and what an adapter believes.

The broker signs `UTF-8(hospital) 0x0A value` with its receipt key; the adapter checks
that bytes, key and hospital are exactly right before a receipt may settle its outbox.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from adapters.common import receipts as adapter_side
from adapters.common.outbox import Outbox
from adapters.common.receipts import (
    BAD_SIGNATURE,
    MALFORMED,
    NO_KEY_CONFIGURED,
    OTHER_HOSPITAL,
    UNKNOWN_KEY,
    UNSIGNED,
    ReceiptKeyError,
    ReceiptRefused,
    ReceiptTrust,
    Refusal,
)
from broker.security import receipt_signing as broker_side
from broker.security.keys import MissingKey
from broker.security.receipt_signing import (
    RECEIPT_KEY_FILE,
    RECEIPT_PUBLIC_FILE,
    ReceiptSigner,
    load_receipt_signer,
    published_entries,
    rotate_receipt_key,
)

MID = "6f1c2b9e-1d7a-4c35-9f53-0c2f3f7a1a11"


def receipt_value(hospital: str | None = "H001", outcome: str = "indexed", mid: str = MID) -> bytes:
    return json.dumps(
        {
            "message_id": mid,
            "hospital": hospital,
            "outcome": outcome,
            "error_code": None,
            "error_detail": None,
            "results": 1,
            "processed_at": "2026-05-20T01:00:00+00:00",
        }
    ).encode()


@pytest.fixture
def signer(tmp_path: Path) -> ReceiptSigner:
    return load_receipt_signer(tmp_path / "keys", create=True)


@pytest.fixture
def trust(signer: ReceiptSigner) -> ReceiptTrust:
    return ReceiptTrust.configured([signer.public_entry])


def refused_reason(
    trust: ReceiptTrust, value: bytes, headers: list[tuple[str, bytes]], hospital: str = "H001"
) -> str:
    with pytest.raises(ReceiptRefused) as caught:
        trust.verify(value, headers, hospital)
    return caught.value.reason


def test_a_receipt_signed_by_the_broker_is_believed(
    signer: ReceiptSigner, trust: ReceiptTrust
) -> None:
    value = receipt_value(outcome="rejected")
    receipt = trust.verify(value, signer.headers("H001", value), "H001")
    assert (receipt.message_id, receipt.outcome, receipt.hospital) == (MID, "rejected", "H001")
    assert receipt.key_id == signer.key_id


def test_the_signature_is_over_hospital_newline_value(signer: ReceiptSigner) -> None:
    """The contract, checked with the bare primitive rather than either side's helper."""
    value = receipt_value()
    headers = dict(signer.headers("H001", value))
    assert set(headers) == {"mrb-key-id", "mrb-signature"}
    signature = base64.b64decode(headers["mrb-signature"], validate=True)
    signer.private_key.public_key().verify(signature, b"H001\n" + value)
    assert broker_side.receipt_signed_bytes("H001", value) == b"H001\n" + value
    assert adapter_side.receipt_signed_bytes("H001", value) == b"H001\n" + value
    # Both sides name the same file and headers.
    assert adapter_side.RECEIPT_KEYS_FILE == RECEIPT_PUBLIC_FILE
    assert (adapter_side.KEY_ID_HEADER, adapter_side.SIGNATURE_HEADER) == (
        broker_side.KEY_ID_HEADER,
        broker_side.SIGNATURE_HEADER,
    )


def test_forged_receipts_are_refused_with_their_reason(
    signer: ReceiptSigner, trust: ReceiptTrust
) -> None:
    value = receipt_value()
    other = ReceiptSigner.from_seed(b"\x01" * 32)
    assert refused_reason(trust, value, []) == UNSIGNED
    assert refused_reason(trust, value, [("mrb-key-id", signer.key_id.encode())]) == UNSIGNED
    # Another key, under its own id or under the broker's.
    assert refused_reason(trust, value, other.headers("H001", value)) == UNKNOWN_KEY
    impostor = [("mrb-key-id", signer.key_id.encode()), other.headers("H001", value)[1]]
    assert refused_reason(trust, value, impostor) == BAD_SIGNATURE
    # The broker's real signature, but the value changed afterwards (rejected -> indexed).
    genuine = signer.headers("H001", receipt_value(outcome="rejected"))
    assert refused_reason(trust, value, genuine) == BAD_SIGNATURE
    # A genuine receipt for another hospital's message that reuses our message id.
    theirs = receipt_value(hospital="H002")
    assert refused_reason(trust, theirs, signer.headers("H002", theirs)) == OTHER_HOSPITAL
    # Signed for H002 while claiming H001 in the body.
    assert refused_reason(trust, value, signer.headers("H002", value)) == BAD_SIGNATURE
    # Garbled signature, empty or non-JSON value.
    garbled = [("mrb-key-id", signer.key_id.encode()), ("mrb-signature", b"not base64!")]
    assert refused_reason(trust, value, garbled) == BAD_SIGNATURE
    assert refused_reason(trust, b"", signer.headers("H001", b"")) == MALFORMED
    assert refused_reason(trust, b"[1]", signer.headers("H001", b"[1]")) == MALFORMED
    # Signed, right hospital, but not a receipt (an outcome the contract does not have).
    odd = receipt_value(outcome="lost")
    assert refused_reason(trust, odd, signer.headers("H001", odd)) == MALFORMED


def test_with_no_key_configured_nothing_is_believed(signer: ReceiptSigner) -> None:
    value = receipt_value()
    empty = ReceiptTrust.configured([], None)
    assert not empty
    with pytest.raises(ReceiptRefused) as caught:
        empty.verify(value, signer.headers("H001", value), "H001")
    assert caught.value.reason == NO_KEY_CONFIGURED
    assert "MRB_RECEIPT_PUBLIC_KEYS" in caught.value.detail


def test_several_keys_are_trusted_during_a_rotation(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = load_receipt_signer(keys, create=True)
    old, new = rotate_receipt_key(keys)
    assert old == first and new.key_id != old.key_id
    assert load_receipt_signer(keys, create=False).key_id == new.key_id
    assert published_entries(keys) == [new.public_entry, old.public_entry]
    both = ReceiptTrust.configured(file=keys / RECEIPT_PUBLIC_FILE)
    assert both.key_ids() == sorted([old.key_id, new.key_id])
    value = receipt_value()
    assert both.verify(value, old.headers("H001", value), "H001").key_id == old.key_id
    assert both.verify(value, new.headers("H001", value), "H001").key_id == new.key_id
    # A second rotation drops the oldest from the published file.
    _, newest = rotate_receipt_key(keys)
    assert published_entries(keys) == [newest.public_entry, new.public_entry]
    only_old = ReceiptTrust.configured([old.public_entry])
    assert refused_reason(only_old, value, newest.headers("H001", value)) == UNKNOWN_KEY


def test_the_receipt_key_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.raises(MissingKey, match="mrb keys init"):
        load_receipt_signer(keys, create=False)
    with pytest.raises(MissingKey):
        rotate_receipt_key(keys)
    signer = load_receipt_signer(keys, create=True)
    assert stat.S_IMODE((keys / RECEIPT_KEY_FILE).stat().st_mode) == 0o600
    assert signer.key_id.startswith("receipt-")
    assert load_receipt_signer(keys, create=False) == signer  # same file, same id
    assert published_entries(keys) == [signer.public_entry]
    assert signer.public_b64 in (keys / RECEIPT_PUBLIC_FILE).read_text()
    assert (
        signer.private_key.private_bytes_raw().hex() not in (keys / RECEIPT_PUBLIC_FILE).read_text()
    )
    # A lost public file is written again from the key.
    (keys / RECEIPT_PUBLIC_FILE).unlink()
    load_receipt_signer(keys, create=False)
    assert published_entries(keys) == [signer.public_entry]


def test_configured_keys_from_setting_and_file(tmp_path: Path) -> None:
    a = ReceiptSigner.from_seed(b"\x02" * 32)
    b = ReceiptSigner.from_seed(b"\x03" * 32)
    c = ReceiptSigner.from_seed(b"\x04" * 32)
    file = tmp_path / "receipt-signing.pub"
    file.write_text(f"# comment\n{c.public_entry}  # newest\n\n")
    trust = ReceiptTrust.configured([f"{a.public_entry},{b.public_entry}"], file)
    assert trust.key_ids() == sorted([a.key_id, b.key_id, c.key_id])
    assert trust.sources == ("MRB_RECEIPT_PUBLIC_KEYS/--receipt-key", str(file))
    assert ReceiptTrust.configured([a.public_entry, b.public_entry]).key_ids() == sorted(
        [a.key_id, b.key_id]
    )
    assert not ReceiptTrust.configured([], tmp_path / "missing.pub")
    for bad in ("no-equals-sign", "k1=not*base64", f"k1={base64.b64encode(b'short').decode()}"):
        with pytest.raises(ReceiptKeyError, match="MRB_RECEIPT_PUBLIC_KEYS"):
            ReceiptTrust.configured([bad])
    file.write_text(f"{a.key_id}={b.public_b64}\n")
    with pytest.raises(ReceiptKeyError, match="differs"):
        ReceiptTrust.configured([a.public_entry], file)


def test_the_outbox_counts_refusals_per_hospital_and_reason(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    try:
        for reason, mid in ((UNSIGNED, "m1"), (UNSIGNED, "m2"), (BAD_SIGNATURE, "m3")):
            box.record_refusal(Refusal(mid, "H001", reason, f"detail {mid}", None))
        box.record_refusal(Refusal("m4", "H002", UNKNOWN_KEY, "detail m4", "receipt-x"))
        rows = {(r.hospital, r.reason): r for r in box.refusals()}
        assert {k: r.count for k, r in rows.items()} == {
            ("H001", UNSIGNED): 2,
            ("H001", BAD_SIGNATURE): 1,
            ("H002", UNKNOWN_KEY): 1,
        }
        assert rows[("H001", UNSIGNED)].last_message_id == "m2"
        assert rows[("H002", UNKNOWN_KEY)].last_key_id == "receipt-x"
        assert [r.reason for r in box.refusals("H002")] == [UNKNOWN_KEY]
    finally:
        box.close()


def test_an_unknown_outcome_or_missing_id_is_not_a_receipt() -> None:
    with pytest.raises(ValueError, match="outcome"):
        adapter_side.Receipt.from_json(receipt_value(outcome="lost"))
    doc = json.loads(receipt_value())
    doc["message_id"] = None
    with pytest.raises(ValueError, match="message id"):
        adapter_side.Receipt.from_json(json.dumps(doc).encode())
