"""After the database commit: DLQ copies of rejected messages and a receipt for each."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from cryptography.exceptions import InvalidTag

from broker.ingest.service import Outcome, Processed
from broker.kafka.topics import RECEIPTS, RESULTS_DLQ
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.receipt_signing import ReceiptSigner


def receipt(p: Processed) -> bytes:
    """A receipt carries the message id and outcome only: no patient data."""
    return json.dumps(
        {
            "message_id": p.message_id,
            "hospital": p.hospital,
            "outcome": p.outcome.value,
            "error_code": p.code.value if p.code else None,
            "error_detail": p.detail,
            "results": p.results,
            "processed_at": datetime.now(UTC).isoformat(),
        },
        ensure_ascii=False,
    ).encode()


DLQ_ALGORITHM_HEADER = "mrb-dlq-encryption"  # "A256GCM;kid=k1": the value is sealed


def dlq_record(p: Processed, cipher: PayloadCipher) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The DLQ copy: the original value sealed (it may hold patient data), headers kept."""
    sealed = cipher.seal(p.message.value, associated=_aad(p.message.headers))
    headers = dlq_headers(p)
    headers.append((DLQ_ALGORITHM_HEADER, f"{sealed.algorithm};kid={sealed.key_id}".encode()))
    return sealed.nonce + sealed.ciphertext, headers


def open_dlq_value(value: bytes, headers: Mapping[str, bytes], cipher: PayloadCipher) -> bytes:
    """The original value of a DLQ record (for replay); raises ValueError if unreadable."""
    spec = headers.get(DLQ_ALGORITHM_HEADER)
    if spec is None:
        return value  # written before DLQ encryption: stored as received
    algorithm, _, kid = spec.decode().partition(";kid=")
    sealed = Sealed(kid, algorithm, value[:12], value[12:])
    try:
        return cipher.open(sealed, associated=_aad(headers))
    except (InvalidTag, KeyError) as exc:
        raise ValueError(f"cannot decrypt DLQ record with key {kid!r}: {exc!r}") from None


def _aad(headers: Mapping[str, bytes]) -> bytes:
    return headers.get("mrb-message-id", b"")


def dlq_headers(p: Processed) -> list[tuple[str, bytes]]:
    headers = [
        (k, v)
        for k, v in p.message.headers.items()
        if not k.startswith("mrb-error-") and k != DLQ_ALGORITHM_HEADER
    ]
    headers.append(("mrb-error-code", (p.code.value if p.code else "").encode()))
    headers.append(("mrb-error-detail", (p.detail or "").encode()))
    if p.message.topic is not None:
        origin = f"{p.message.topic}/{p.message.partition}/{p.message.offset}"
        headers.append(("mrb-origin", origin.encode()))
    return headers


async def publish_followups(
    producer: AIOKafkaProducer,
    processed: list[Processed],
    cipher: PayloadCipher,
    signer: ReceiptSigner,
) -> None:
    """Send DLQ copies and signed receipts and wait for every acknowledgement."""
    futures = []
    for p in processed:
        if p.outcome is Outcome.REJECTED:
            value, headers = dlq_record(p, cipher)
            futures.append(
                await producer.send(RESULTS_DLQ, value=value, key=p.message.key, headers=headers)
            )
        if p.message_id is not None or p.hospital is not None:
            value = receipt(p)
            futures.append(
                await producer.send(
                    RECEIPTS,
                    value=value,
                    key=(p.hospital or "").encode() or None,
                    headers=signer.headers(p.hospital or "", value),
                )
            )
    for fut in futures:
        await fut
