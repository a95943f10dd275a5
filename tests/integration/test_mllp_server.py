"""MLLP over a real TCP socket into the real outbox: the ACK leaves only after the store.

The LIS side is a plain asyncio client on 127.0.0.1; the adapter side is serve_mllp
with the intake handler writing to adapters/common/outbox.py (SQLite in tmp_path).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.common.envelope import Signer
from adapters.common.outbox import Outbox
from adapters.common.signing import signed_bytes
from adapters.hl7v2.ack import application_ack
from adapters.hl7v2.config import InterfaceConfig
from adapters.hl7v2.intake import Intake, accept, accept_message, mllp_handler, reject_oversize
from adapters.hl7v2.mllp import (
    DEFAULT_MAX_FRAME_BYTES,
    Handler,
    MllpDecoder,
    Oversize,
    OversizeHandler,
    frame,
    serve_mllp,
)

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "hl7v2"
KEY = Ed25519PrivateKey.generate()
ORU = (
    b"MSH|^~\\&|LIS|LAB|MRB|H001|20260518103000||ORU^R01^ORU_R01|MSG0001|P|2.5.1\r"
    b"PID|1||MRN123^^^HIS^MR||Zhang^San||19800101|F\r"
    b"OBR|1|PL1^HIS|FL1^LIS|CBC^Blood count^L|||20260518083000||||||||||||||||||F\r"
    b"OBX|1|NM|718-7^Hemoglobin^LN||132|g/L|115-150|N|||F|||20260518090000\r"
)


def with_ack_types(message: bytes, accept_type: str, application_type: str) -> bytes:
    msh, rest = message.split(b"\r", 1)
    return msh + f"|||{accept_type}|{application_type}".encode() + b"\r" + rest


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    yield box
    box.close()


@pytest.fixture
def intake(outbox: Outbox) -> Intake:
    return Intake(outbox, Signer("H001", "H001-test", KEY, b"r" * 32))


@asynccontextmanager
async def listening(
    handler: Handler,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    on_oversize: OversizeHandler | None = None,
) -> AsyncIterator[int]:
    server = await serve_mllp(
        "127.0.0.1", 0, handler, max_frame_bytes=max_frame_bytes, on_oversize=on_oversize
    )
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, *messages: bytes, expect: int | None = None) -> list[bytes]:
    """Send the messages in one write; read ACKs until `expect` arrive or the peer closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    wanted = len(messages) if expect is None else expect
    acks: list[bytes] = []
    try:
        writer.write(b"".join(frame(m) for m in messages))
        await writer.drain()
        decoder = MllpDecoder()
        async with asyncio.timeout(20):  # a hang fails the test instead of blocking CI
            while len(acks) < wanted and (data := await reader.read(65536)):
                acks += [a for a in decoder.feed(data) if isinstance(a, bytes)]
    finally:
        writer.close()
        await writer.wait_closed()
    return acks


def msa(ack: bytes) -> tuple[str, str]:
    segment = hl7.parse(ack.decode()).segment("MSA")
    return str(segment(1)), str(segment(2))


def err3(ack: bytes) -> str:
    return str(hl7.parse(ack.decode()).segment("ERR")(3))


def recording(intake: Intake, seen: list[set[str]]) -> Handler:
    """The intake handler, noting what the outbox holds at the moment the ACK is handed
    back to the server (which writes it to the socket only after that)."""

    async def handle(raw: bytes) -> bytes | None:
        ack = await accept_message(raw, intake)
        seen.append(intake.outbox.pending_ids("H001"))
        return ack

    return handle


class TestOriginalMode:
    async def test_aa_comes_back_after_the_message_is_in_the_outbox(
        self, intake: Intake, outbox: Outbox
    ) -> None:
        seen: list[set[str]] = []
        async with listening(recording(intake, seen)) as port:
            (ack,) = await exchange(port, ORU)
        assert msa(ack) == ("AA", "MSG0001")
        assert len(seen) == 1 and len(seen[0]) == 1  # stored before the ACK was written
        (entry,) = outbox.due("H001", datetime.now(UTC))
        assert entry.message.message_id in seen[0]
        bundle = json.loads(entry.message.value)
        report = next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DiagnosticReport"
        )
        assert report["identifier"][0]["value"] == "FL1"
        signature = base64.b64decode(entry.message.signature)
        KEY.public_key().verify(
            signature, signed_bytes("H001", entry.message.message_id, entry.message.value)
        )
        assert entry.message.key_id == "H001-test"

    @pytest.mark.skipif(not REALDATA.is_dir(), reason="real-data corpus missing")
    async def test_a_real_two_report_message_stores_two_bundles_in_one_go(
        self, intake: Intake, outbox: Outbox
    ) -> None:
        raw = (REALDATA / "msfc_LAB-ORU-1.hl7").read_bytes()  # BOM, LF separators
        async with listening(mllp_handler(intake)) as port:
            (ack,) = await exchange(port, raw)
        assert msa(ack) == ("AA", "182")
        assert len(outbox.pending_ids("H001")) == 2

    async def test_a_resent_message_is_stored_once_and_acknowledged_again(
        self, intake: Intake, outbox: Outbox
    ) -> None:
        async with listening(mllp_handler(intake)) as port:
            first = await exchange(port, ORU)
            again = await exchange(port, ORU)
        assert [msa(a)[0] for a in first + again] == ["AA", "AA"]
        assert len(outbox.pending_ids("H001")) == 1

    async def test_messages_on_one_connection_are_answered_in_order(self, intake: Intake) -> None:
        second = ORU.replace(b"MSG0001", b"MSG0002").replace(b"FL1^LIS", b"FL2^LIS")
        adt = ORU.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01").replace(b"MSG0001", b"MSG0003")
        async with listening(mllp_handler(intake)) as port:
            acks = await exchange(port, ORU, second, adt)
        assert [msa(a) for a in acks] == [("AA", "MSG0001"), ("AA", "MSG0002"), ("AR", "MSG0003")]
        assert err3(acks[2]) == "200^Unsupported message type^HL70357"
        assert len(intake.outbox.pending_ids("H001")) == 2

    async def test_a_mapping_error_is_an_ae_and_nothing_is_stored(
        self, intake: Intake, outbox: Outbox
    ) -> None:
        bad = ORU.replace(b"||132|", b"||positive|")
        async with listening(mllp_handler(intake)) as port:
            (ack,) = await exchange(port, bad)
        assert msa(ack) == ("AE", "MSG0001")
        assert err3(ack) == "102^Data type error^HL70357"
        assert outbox.pending_ids() == set()

    async def test_an_oversize_frame_is_rejected_naming_the_message(self, intake: Intake) -> None:
        big = ORU + b"NTE|1||" + b"x" * 5000 + b"\r"

        async def oversize(item: Oversize) -> bytes | None:
            return await reject_oversize(item, intake)

        async with listening(
            mllp_handler(intake), max_frame_bytes=1000, on_oversize=oversize
        ) as port:
            acks = await exchange(port, big, ORU)
        assert [msa(a) for a in acks] == [("AR", "MSG0001"), ("AA", "MSG0001")]

    async def test_a_failing_handler_sends_no_ack_and_closes(self) -> None:
        async def broken(raw: bytes) -> bytes | None:
            raise RuntimeError("disk on fire")

        async with listening(broken) as port:
            acks = await exchange(port, ORU, expect=1)
        assert acks == []  # the connection closed: the LIS resends later


class TestEnhancedMode:
    async def test_commit_accept_arrives_at_once_when_msh15_is_al(
        self, intake: Intake, outbox: Outbox
    ) -> None:
        seen: list[set[str]] = []
        async with listening(recording(intake, seen)) as port:
            (ack,) = await exchange(port, with_ack_types(ORU, "AL", "AL"))
        assert msa(ack) == ("CA", "MSG0001")
        assert len(seen[0]) == 1 and outbox.pending_ids() == seen[0]

    @pytest.mark.skipif(not REALDATA.is_dir(), reason="real-data corpus missing")
    async def test_real_lri_message_with_application_ack_requested(self, intake: Intake) -> None:
        raw = (REALDATA / "msfc_LRI_2.0-NG_CBC_Typ_Message.hl7").read_bytes()
        raw = raw.replace(b"|AL|NE|", b"|AL|AL|")
        async with listening(mllp_handler(intake)) as port:
            (ack,) = await exchange(port, raw)
        assert msa(ack) == ("CA", "NIST-LRI-NG-002.00")
        # Later (e.g. on the broker's receipt) the caller sends the application ACK.
        accepted = accept(raw, intake)
        assert accepted.header is not None
        later = application_ack(accepted.header)
        assert later is not None and msa(later.encode()) == ("AA", "NIST-LRI-NG-002.00")

    async def test_msh15_ne_gets_no_ack_on_the_socket(self, intake: Intake) -> None:
        quiet = with_ack_types(ORU, "NE", "AL")
        loud = with_ack_types(
            ORU.replace(b"MSG0001", b"MSG0002").replace(b"FL1", b"FL2"), "AL", "NE"
        )
        async with listening(mllp_handler(intake)) as port:
            acks = await exchange(port, quiet, loud, expect=1)
        assert [msa(a) for a in acks] == [("CA", "MSG0002")]
        assert len(intake.outbox.pending_ids("H001")) == 2  # both stored

    async def test_a_content_error_is_a_commit_error(self, intake: Intake) -> None:
        bad = with_ack_types(ORU.replace(b"|F|||2026", b"|Q|||2026"), "AL", "AL")
        async with listening(mllp_handler(intake)) as port:
            (ack,) = await exchange(port, bad)
        assert msa(ack) == ("CE", "MSG0001")
        assert err3(ack) == "103^Table value not found^HL70357"


class TestIntake:
    def test_a_failed_outbox_write_answers_ae_207(self, intake: Intake, outbox: Outbox) -> None:
        outbox.close()
        accepted = accept(ORU, intake)
        assert accepted.ack is not None
        assert msa(accepted.ack) == ("AE", "MSG0001")
        assert err3(accepted.ack) == "207^Application internal error^HL70357"
        assert accepted.message_ids == ()

    def test_the_ack_speaks_the_senders_charset(self, outbox: Outbox) -> None:
        gbk = Intake(
            outbox,
            Signer("H001", "H001-test", KEY, b"r" * 32),
            InterfaceConfig(fallback_encoding="gbk"),
        )
        raw = (
            ORU.decode()
            .replace("|LIS|LAB|", "|检验系统|LAB|")
            .replace("Zhang^San", "张^三")
            .encode("gbk")
        )
        accepted = accept(raw, gbk)
        assert accepted.ack is not None and accepted.encoding == "gb18030"
        assert "|检验系统|LAB|" in accepted.ack.decode("gb18030")  # MSH-5 echoes MSH-3
        (entry,) = outbox.due("H001", datetime.now(UTC))
        assert "张" in entry.message.value.decode("utf-8")  # the Bundle itself is UTF-8

    def test_undecodable_bytes_are_refused_with_the_header_echoed(self, intake: Intake) -> None:
        raw = ORU.replace(b"Zhang^San", "张^三".encode("gbk"))  # GBK, default fallback UTF-8
        accepted = accept(raw, intake)
        assert accepted.ack is not None
        assert msa(accepted.ack) == ("AR", "MSG0001")
        assert accepted.error is not None and accepted.error.code == "HL7_ENCODING"
