"""Who may connect to the MLLP and DICOM listeners, over real sockets on 127.0.0.1.

"Outside the allowlist" is an allowlist without 127.0.0.1 (10.0.0.0/8). TLS uses a test
CA made here with `cryptography`: a server certificate for localhost/127.0.0.1 and a
client certificate for mutual TLS, plus a client certificate from an unrelated CA.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom import AE
from pynetdicom.association import Association

from adapters.common.envelope import Signer
from adapters.common.outbox import Outbox
from adapters.common.peers import PeerAllowlist, TlsFiles
from adapters.dicom.bundle import BundleOptions
from adapters.dicom.scp import SUCCESS, ScpSettings, StoreScp
from adapters.dicom.service import DicomAdapter
from adapters.dicom.spool import Spool
from adapters.hl7v2.intake import Intake, mllp_handler
from adapters.hl7v2.mllp import Handler, MllpDecoder, frame, serve_mllp
from tests.integration.test_dicom_scp import Received
from tests.integration.test_mllp_server import KEY, ORU, msa

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOT_LOOPBACK = PeerAllowlist.parse(["10.0.0.0/8"])
PEERS_LOGGER = "adapters.common.peers"
MR = "MR_small.dcm"


# --- a test PKI ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from a CA the listener does not trust
    stranger_key: Path

    def server(self, *, mutual: bool = False) -> TlsFiles:
        return TlsFiles(self.server_cert, self.server_key, self.ca if mutual else None)

    def client(self, identity: str | None = None) -> ssl.SSLContext:
        """A client trusting the test CA; `identity` "client" or "stranger" presents a cert."""
        context = ssl.create_default_context(cafile=self.ca)
        if identity == "client":
            context.load_cert_chain(self.client_cert, self.client_key)
        elif identity == "stranger":
            context.load_cert_chain(self.stranger_cert, self.stranger_key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("mrb test CA", ca_key, None, ca=True)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _issue("localhost", server_key, (ca.subject, ca_key), san=san)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("mrb-test-lis", client_key, (ca.subject, ca_key))
    stranger_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = _issue("another CA", stranger_ca_key, None, ca=True)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _issue("stranger", stranger_key, (stranger_ca.subject, stranger_ca_key))
    return Pki(
        ca_path,
        *_write(directory, "server", server, server_key),
        *_write(directory, "client", client, client_key),
        *_write(directory, "stranger", stranger, stranger_key),
    )


def peer_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PEERS_LOGGER]


# --- MLLP ----------------------------------------------------------------------------


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    yield box
    box.close()


@pytest.fixture
def intake(outbox: Outbox) -> Intake:
    return Intake(outbox, Signer("H001", "H001-test", KEY, b"r" * 32))


@pytest.fixture(autouse=True)
def peer_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=PEERS_LOGGER)


def counting(handler: Handler, calls: list[bytes]) -> Handler:
    async def handle(raw: bytes) -> bytes | None:
        calls.append(raw)
        return await handler(raw)

    return handle


@asynccontextmanager
async def mllp(
    handler: Handler, peers: PeerAllowlist | None = None, tls: TlsFiles | None = None
) -> AsyncIterator[int]:
    server = await serve_mllp(
        "127.0.0.1", 0, handler, peers=peers, tls=tls.context() if tls else None
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def send(port: int, message: bytes, tls: ssl.SSLContext | None = None) -> list[bytes]:
    """Send one framed message; the ACKs read until one arrives or the listener hangs up."""
    acks: list[bytes] = []
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
        )
    except (ConnectionError, ssl.SSLError):
        return acks  # refused during the handshake
    try:
        writer.write(frame(message))
        await writer.drain()
        decoder = MllpDecoder()
        async with asyncio.timeout(20):
            while not acks and (data := await reader.read(65536)):
                acks += [a for a in decoder.feed(data) if isinstance(a, bytes)]
    except (ConnectionError, ssl.SSLError):
        pass  # the listener hung up (reset, or a TLS alert)
    finally:
        writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return acks


class TestMllp:
    async def test_a_peer_outside_the_allowlist_is_disconnected_unread(
        self, intake: Intake, outbox: Outbox, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[bytes] = []
        async with mllp(counting(mllp_handler(intake), calls), NOT_LOOPBACK) as port:
            acks = await send(port, ORU)
        assert acks == [] and calls == []  # never read, never answered
        assert outbox.pending_ids() == set()
        (line,) = peer_lines(caplog)
        assert line.startswith('mllp connection refused: peer="127.0.0.1:')
        assert 'reason="address not allowed"' in line
        assert "MRN123" not in caplog.text and "Zhang" not in caplog.text

    async def test_an_allowed_peer_is_served_and_logged(
        self, intake: Intake, outbox: Outbox, caplog: pytest.LogCaptureFixture
    ) -> None:
        peers = PeerAllowlist.parse(["10.0.0.0/8", "127.0.0.1"])
        async with mllp(mllp_handler(intake), peers) as port:
            (ack,) = await send(port, ORU)
        assert msa(ack) == ("AA", "MSG0001")
        assert len(outbox.pending_ids("H001")) == 1
        (line,) = peer_lines(caplog)
        assert line.startswith('mllp connection accepted: peer="127.0.0.1:')
        assert "MRN123" not in line and "MSG0001" not in line

    async def test_tls_carries_messages_and_plain_text_is_refused(
        self, intake: Intake, outbox: Outbox, pki: Pki, caplog: pytest.LogCaptureFixture
    ) -> None:
        calls: list[bytes] = []
        second = ORU.replace(b"MSG0001", b"MSG0002").replace(b"FL1^LIS", b"FL2^LIS")
        async with mllp(counting(mllp_handler(intake), calls), tls=pki.server()) as port:
            (ack,) = await send(port, ORU, pki.client())
            plain = await send(port, second)
        assert msa(ack) == ("AA", "MSG0001")
        assert plain == [] and len(calls) == 1  # the plain-text message was never read
        assert len(outbox.pending_ids("H001")) == 1
        accepted, refused = peer_lines(caplog)
        assert "accepted" in accepted and "TLS" in accepted
        assert "refused" in refused and 'reason="TLS handshake failed (SSLError)"' in refused

    @pytest.mark.parametrize("identity", [None, "stranger"])
    async def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(
        self,
        intake: Intake,
        outbox: Outbox,
        pki: Pki,
        identity: str | None,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        calls: list[bytes] = []
        handler = counting(mllp_handler(intake), calls)
        async with mllp(handler, tls=pki.server(mutual=True)) as port:
            refused = await send(port, ORU, pki.client(identity))
            (ack,) = await send(port, ORU, pki.client("client"))
        assert refused == [] and len(calls) == 1
        assert msa(ack) == ("AA", "MSG0001")
        no, yes = peer_lines(caplog)
        assert "refused" in no and "TLS handshake failed" in no
        assert "accepted" in yes and 'client_cert="mrb-test-lis"' in yes


# --- DICOM ---------------------------------------------------------------------------


@pytest.fixture
def running() -> Iterator[list[StoreScp]]:
    started: list[StoreScp] = []
    yield started
    for scp in started:
        scp.stop()


def serve(running: list[StoreScp], on_instance: Received, **settings: Any) -> StoreScp:
    scp = StoreScp(ScpSettings(port=0, **settings), on_instance, zone=SHANGHAI)
    running.append(scp.start())
    return scp


def associate(
    port: int,
    realdata: Path,
    *,
    calling: str = "TESTSCU",
    called: str = "MRB",
    tls: ssl.SSLContext | None = None,
) -> Association:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ds = pydicom.dcmread(realdata / "dicom" / MR, stop_before_pixels=True)
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    tls_args = (tls, "localhost") if tls else None
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)


def store_mr(assoc: Association, realdata: Path) -> int:
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(realdata / "dicom" / MR).Status)
    finally:
        assoc.release()


def wait_for_lines(caplog: pytest.LogCaptureFixture, n: int) -> list[str]:
    """The association threads log on their own time: wait a little for them."""
    deadline = time.monotonic() + 10
    while len(peer_lines(caplog)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return peer_lines(caplog)


class TestDicom:
    async def test_a_peer_outside_the_allowlist_reaches_nothing(
        self, tmp_path: Path, realdata: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = bytes(range(32))
        adapter = DicomAdapter(
            options=BundleOptions("H001"),
            outbox=Outbox(tmp_path / "outbox.db", key),
            spool=Spool(tmp_path / "spool.db", key),
            signer=Signer("H001", "H001-test", KEY, key),
            loop=asyncio.get_running_loop(),
            quiet_seconds=0.05,
        )
        settings = ScpSettings(port=0, allowed_peers=("10.0.0.0/8",))
        scp = StoreScp(settings, adapter.on_instance, zone=SHANGHAI, loop=adapter.loop).start()
        adapter.collector.start()
        try:
            assoc = await asyncio.to_thread(associate, scp.port, realdata)
            assert not assoc.is_established and not assoc.is_rejected  # hung up, not answered
        finally:
            scp.stop()
            adapter.collector.stop(flush=True)
        assert sum(adapter.outbox.counts().values()) == 0
        assert adapter.spool.pending() == 0 and list(adapter.spool.load()) == []
        (line,) = peer_lines(caplog)
        assert line.startswith('dicom connection refused: peer="127.0.0.1:')
        assert 'reason="address not allowed"' in line
        adapter.outbox.close()
        adapter.spool.close()

    def test_a_calling_ae_title_outside_the_allowlist_is_rejected(
        self, realdata: Path, running: list[StoreScp], caplog: pytest.LogCaptureFixture
    ) -> None:
        received = Received()
        scp = serve(running, received, allowed_calling_ae_titles=("PACS1", "PACS2"))
        wrong = associate(scp.port, realdata, calling="INTRUDER")
        assert wrong.is_rejected and not wrong.is_established  # A-ASSOCIATE-RJ
        assert received.instances == []
        assert store_mr(associate(scp.port, realdata, calling="PACS2"), realdata) == SUCCESS
        assert len(received.instances) == 1
        no, yes = wait_for_lines(caplog, 2)
        assert no.startswith("dicom connection refused")
        assert 'reason="calling AE title not allowed"' in no
        assert 'calling_ae="INTRUDER" called_ae="MRB"' in no
        assert yes.startswith("dicom connection accepted")
        assert 'calling_ae="PACS2"' in yes
        patient = pydicom.dcmread(realdata / "dicom" / MR, stop_before_pixels=True)
        assert str(patient.PatientID) not in "\n".join([no, yes])

    def test_the_called_ae_title_is_checked_by_default(
        self, realdata: Path, running: list[StoreScp], caplog: pytest.LogCaptureFixture
    ) -> None:
        received = Received()
        scp = serve(running, received, ae_title="MRB_H001")
        wrong = associate(scp.port, realdata, called="SOMEONE")
        assert wrong.is_rejected and received.instances == []
        (line,) = wait_for_lines(caplog, 1)
        assert 'reason="called AE title is not this receiver"' in line

    def test_tls_carries_instances_and_plain_text_is_refused(
        self,
        realdata: Path,
        running: list[StoreScp],
        pki: Pki,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        received = Received()
        scp = serve(running, received, tls=pki.server())
        plain = associate(scp.port, realdata)
        assert not plain.is_established and received.instances == []
        assert store_mr(associate(scp.port, realdata, tls=pki.client()), realdata) == SUCCESS
        assert len(received.instances) == 1
        no, yes = wait_for_lines(caplog, 2)
        assert "refused" in no and "TLS handshake failed" in no
        assert "accepted" in yes and "TLS" in yes

    def test_mutual_tls_refuses_a_client_without_a_certificate(
        self,
        realdata: Path,
        running: list[StoreScp],
        pki: Pki,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        received = Received()
        scp = serve(running, received, tls=pki.server(mutual=True))
        anonymous = associate(scp.port, realdata, tls=pki.client())
        assert not anonymous.is_established and received.instances == []
        with_cert = associate(scp.port, realdata, tls=pki.client("client"))
        assert store_mr(with_cert, realdata) == SUCCESS
        no, yes = wait_for_lines(caplog, 2)
        assert "TLS handshake failed" in no
        assert 'client_cert="mrb-test-lis"' in yes

    def test_a_connection_that_asks_for_nothing_is_logged_once(
        self, running: list[StoreScp], caplog: pytest.LogCaptureFixture
    ) -> None:
        scp = serve(running, Received())
        with socket.create_connection(("127.0.0.1", scp.port)):
            pass  # e.g. a port scan or a health check
        (line,) = wait_for_lines(caplog, 1)
        assert line.startswith('dicom connection refused: peer="127.0.0.1:')
        assert 'reason="closed without an association request"' in line
