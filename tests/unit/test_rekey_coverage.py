"""Every column that can hold sealed bytes is re-sealed by `mrb keys rotate`
(broker/storage/rekey.py: SEALED), or named here with why it needs no re-sealing: a new
sealed column that rekey does not know would keep the old payload key in use after
`mrb keys usage` said it could go (as person_demographics, CDS cards and HIS launch
sessions once did)."""

from __future__ import annotations

from sqlalchemy import JSON, LargeBinary

from broker.storage.rekey import SEALED
from broker.storage.schema import metadata

# Binary columns that are not ciphertext of the payload cipher.
NOT_SEALED = {
    ("audit_checkpoint", "signature"): "an Ed25519 signature of a checkpoint, public",
    ("payload", "nonce"): "the nonce of payload.ciphertext",
    ("person_birth_date", "nonce"): "the nonce of its ciphertext",
    ("person_demographics", "nonce"): "the nonce of its ciphertext",
    ("recognition_check", "patient_nonce"): "the nonce of patient_sealed",
    ("rejection", "message_key"): "the Kafka record key as sent: an opaque routing hash",
}
# JSON columns whose content is sealed (the envelope inside, base64).
SEALED_JSON = {("cds_card", "content")}


def _columns(kind: type) -> set[tuple[str, str]]:
    return {
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, kind)
    }


def test_every_binary_column_is_resealed_or_said_why_not() -> None:
    unknown = _columns(LargeBinary) - SEALED - set(NOT_SEALED)
    assert not unknown, f"re-seal these in broker/storage/rekey.py or list them: {unknown}"


def test_what_rekey_names_exists() -> None:
    assert _columns(LargeBinary) | SEALED_JSON >= SEALED
    assert _columns(JSON) >= SEALED_JSON and SEALED_JSON <= SEALED
    assert not SEALED & set(NOT_SEALED)
