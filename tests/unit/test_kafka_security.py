"""TLS and SASL options handed to every Kafka client."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from broker.kafka.security import KafkaSecurityError, client_options
from broker.settings import Settings


def test_plaintext_by_default() -> None:
    assert client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_scram_over_tls() -> None:
    opts = client_options(
        "sasl_ssl", sasl_mechanism="SCRAM-SHA-256", username="hospital-h001", password="s3cret"
    )
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("hospital-h001", "s3cret")
    assert isinstance(opts["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "TLS"}, "MRB_KAFKA_SECURITY_PROTOCOL"),
        ({"protocol": "SASL_SSL"}, "MRB_KAFKA_SASL_USERNAME"),
        (
            {"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "username": "u", "password": "p"},
            "MRB_KAFKA_SASL_MECHANISM",
        ),
        ({"protocol": "SSL", "certfile": Path("c.pem")}, "both"),
        ({"protocol": "PLAINTEXT", "cafile": Path("ca.pem")}, "no SSL"),
    ],
)
def test_inconsistent_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        client_options(**kwargs)  # type: ignore[arg-type]


def test_the_embedded_broker_gets_no_options(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, kafka_security_protocol="SASL_SSL").kafka_options() == {}


def test_settings_pass_the_secret_without_showing_it(tmp_path: Path) -> None:
    s = Settings(
        data_dir=tmp_path,
        kafka_bootstrap="kafka:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="broker",
        kafka_sasl_password="hunter2",
    )  # type: ignore[arg-type]
    assert "hunter2" not in repr(s)
    assert s.kafka_options()["sasl_plain_password"] == "hunter2"
