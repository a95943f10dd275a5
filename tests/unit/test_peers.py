"""Listener access settings: the allowlist, TLS files, the log line, the CLI options."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.common.peers import PeerAllowlist, TlsFiles, log_connection, peer_text
from adapters.common.signing import create_key
from broker.cli.adapter_cmd import app

runner = CliRunner()


class TestAllowlist:
    def test_nothing_configured_means_loopback_only(self) -> None:
        default = PeerAllowlist.parse()
        assert str(default) == "127.0.0.0/8, ::1/128"
        assert default.allows("127.0.0.1") and default.allows("127.9.9.9")
        assert default.allows("::1")
        assert not default.allows("10.0.0.1") and not default.allows("192.168.1.20")

    def test_networks_and_addresses_repeated_or_separated(self) -> None:
        peers = PeerAllowlist.parse(["10.20.0.0/16", "192.168.1.7, 2001:db8::/32"])
        assert peers.allows("10.20.3.4") and not peers.allows("10.21.0.1")
        assert peers.allows("192.168.1.7") and not peers.allows("192.168.1.8")
        assert peers.allows("2001:db8::5")
        assert not peers.allows("127.0.0.1")  # configuring peers replaces the default

    def test_a_dual_stack_socket_shows_ipv4_peers_mapped(self) -> None:
        peers = PeerAllowlist.parse(["10.0.0.0/8"])
        assert peers.allows("::ffff:10.1.2.3")
        assert not peers.allows("::ffff:11.1.2.3")

    def test_anything_but_an_ip_address_is_not_allowed(self) -> None:
        assert not PeerAllowlist.parse().allows("localhost")
        assert not PeerAllowlist.parse().allows("")

    @pytest.mark.parametrize("bad", ["10.0.0.5/8", "10.0.0.0/33", "lab-server", "10.0.0.*"])
    def test_a_bad_entry_is_refused_by_name(self, bad: str) -> None:
        with pytest.raises(ValueError, match="not a network or address"):
            PeerAllowlist.parse(["127.0.0.1", bad])


def test_missing_tls_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load the TLS files"):
        TlsFiles(tmp_path / "server.crt", tmp_path / "server.key").context()


def test_the_log_line_quotes_what_the_peer_chose(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="adapters.common.peers")
    log_connection(
        "dicom",
        peer_text(("::1", 104, 0, 0)),
        accepted=False,
        reason="calling AE title not allowed",
        calling_ae='EVIL"\nFORGED',
        client_cert=None,
    )
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        'dicom connection refused: peer="[::1]:104" reason="calling AE title not allowed" '
        'calling_ae="EVIL\\"\\nFORGED"'
    )  # one line: a title cannot forge another entry
    assert record.__dict__["decision"] == "refused" and record.__dict__["peer"] == "[::1]:104"


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The listen commands set up logging for their process; undo it for the next tests."""
    root, dicom = logging.getLogger(), logging.getLogger("pynetdicom")
    handlers, level, dicom_level = root.handlers[:], root.level, dicom.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    dicom.setLevel(dicom_level)


@pytest.mark.usefixtures("keep_logging")
class TestCliOptions:
    """Bad access settings stop the listener before it starts (exit 2, the cause named)."""

    def test_a_bad_allow_peer(self, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            [
                "hl7v2",
                "--hospital",
                "H001",
                "--listen",
                "127.0.0.1:0",
                "--allow-peer",
                "10.0.0.5/8",
            ],
            env={"MRB_DATA_DIR": str(tmp_path)},
        )
        assert result.exit_code == 2 and "10.0.0.5/8" in result.output

    def test_the_environment_variable_is_read(self, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            ["dicom", "--hospital", "H001", "--listen", "127.0.0.1:0"],
            env={"MRB_DATA_DIR": str(tmp_path), "MRB_DICOM_ALLOW_PEERS": "10.0.0.0/8 pacs"},
        )
        assert result.exit_code == 2 and "'pacs'" in result.output

    def test_tls_needs_certificate_and_key(self, tmp_path: Path) -> None:
        result = runner.invoke(
            app,
            ["hl7v2", "--hospital", "H001", "--listen", "127.0.0.1:0"],
            env={"MRB_DATA_DIR": str(tmp_path), "MRB_HL7V2_TLS_CERT": str(tmp_path / "a.crt")},
        )
        assert result.exit_code == 2 and "--tls-key" in result.output

    def test_a_calling_ae_title_dicom_cannot_carry(self, tmp_path: Path) -> None:
        create_key(tmp_path / "keys", "H001")
        result = runner.invoke(
            app,
            [
                *("dicom", "--hospital", "H001", "--listen", "127.0.0.1:0"),
                *("--allow-calling-aet", "PACS1", "--allow-calling-aet", "A_VERY_LONG_AE_TITLE"),
            ],
            env={"MRB_DATA_DIR": str(tmp_path), "MRB_KAFKA_BOOTSTRAP": "127.0.0.1:9"},
        )
        assert result.exit_code == 2 and "must not exceed 16 characters" in result.output
