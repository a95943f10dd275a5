"""TLS and SASL for every Kafka client mrb creates (production Apache Kafka).

Settings (environment): MRB_KAFKA_SECURITY_PROTOCOL (PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL), MRB_KAFKA_SASL_MECHANISM (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN),
MRB_KAFKA_SASL_USERNAME / MRB_KAFKA_SASL_PASSWORD, MRB_KAFKA_SSL_CAFILE, and for mutual
TLS MRB_KAFKA_SSL_CERTFILE / MRB_KAFKA_SSL_KEYFILE. The embedded broker uses PLAINTEXT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSecurityError(ValueError):
    """The Kafka security settings are inconsistent (the message names the setting)."""


def client_options(
    protocol: str = "PLAINTEXT",
    *,
    sasl_mechanism: str | None = None,
    username: str | None = None,
    password: str | None = None,
    cafile: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient."""
    protocol = protocol.upper()
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError(f"MRB_KAFKA_SECURITY_PROTOCOL must be one of {PROTOCOLS}")
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        mechanism = (sasl_mechanism or "SCRAM-SHA-512").upper()
        if mechanism not in MECHANISMS:
            raise KafkaSecurityError(f"MRB_KAFKA_SASL_MECHANISM must be one of {MECHANISMS}")
        if not username or not password:
            raise KafkaSecurityError(
                "SASL needs MRB_KAFKA_SASL_USERNAME and MRB_KAFKA_SASL_PASSWORD"
            )
        options.update(
            sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password
        )
    if protocol in ("SSL", "SASL_SSL"):
        if (certfile is None) != (keyfile is None):
            raise KafkaSecurityError(
                "mutual TLS needs both MRB_KAFKA_SSL_CERTFILE and MRB_KAFKA_SSL_KEYFILE"
            )
        options["ssl_context"] = create_ssl_context(
            cafile=str(cafile) if cafile else None,
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
    elif certfile or keyfile or cafile:
        raise KafkaSecurityError("TLS files are set but the protocol has no SSL")
    return options
