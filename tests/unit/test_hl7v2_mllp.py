"""MLLP framing (pure decoder) and file mode (batches, bare and framed messages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.hl7v2.batch import split_messages
from adapters.hl7v2.errors import Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.mllp import MllpDecoder, Oversize, frame

A = b"MSH|^~\\&|LIS|LAB|||20260518||ORU^R01|A1|P|2.5\rPID|1||1\r"
B = b"MSH|^~\\&|LIS|LAB|||20260518||ORU^R01|B2|P|2.5\rPID|1||2\r"
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "hl7v2"


class TestDecoder:
    def test_one_frame(self) -> None:
        assert MllpDecoder().feed(frame(A)) == [A]

    def test_a_frame_split_at_every_byte(self) -> None:
        decoder = MllpDecoder()
        out: list[bytes | Oversize] = []
        for byte in frame(A) + frame(B):
            out += decoder.feed(bytes([byte]))
        assert out == [A, B]

    def test_end_block_split_between_reads(self) -> None:
        decoder = MllpDecoder()
        data = frame(A)
        assert decoder.feed(data[:-1]) == []  # ends with 0x1C
        assert decoder.pending
        assert decoder.feed(data[-1:]) == [A]
        assert not decoder.pending

    def test_two_frames_in_one_read_and_noise_between_them(self) -> None:
        assert MllpDecoder().feed(frame(A) + b"\r\n  " + frame(B)) == [A, B]

    def test_a_partial_second_frame_waits_for_the_rest(self) -> None:
        decoder = MllpDecoder()
        data = frame(A) + frame(B)
        cut = len(frame(A)) + 10
        assert decoder.feed(data[:cut]) == [A]
        assert decoder.feed(data[cut:]) == [B]

    def test_an_oversize_frame_is_reported_and_skipped(self) -> None:
        big = b"MSH|^~\\&|LIS|LAB|||2026||ORU^R01|BIG|P|2.5\r" + b"X" * 500
        out = MllpDecoder(max_frame_bytes=200).feed(frame(big) + frame(A))
        assert len(out) == 2
        assert isinstance(out[0], Oversize)
        assert out[0].size == len(big) and out[0].head.startswith(b"MSH|")
        assert out[1] == A

    def test_an_oversize_frame_arriving_in_pieces_is_not_buffered(self) -> None:
        decoder = MllpDecoder(max_frame_bytes=100)
        big = b"MSH|" + b"Y" * 1000
        data = frame(big) + frame(A)
        out: list[bytes | Oversize] = []
        for start in range(0, len(data), 64):
            out += decoder.feed(data[start : start + 64])
            assert decoder.buffered <= 100 + 64  # never holds the whole big frame
        assert [type(o) for o in out] == [Oversize, bytes]
        assert isinstance(out[0], Oversize) and out[0].size == len(big)
        assert out[1] == A


class TestFileMode:
    def test_batch_with_file_and_batch_envelopes(self) -> None:
        data = b"FHS|^~\\&|LIS\rBHS|^~\\&|LIS\r" + A + B + b"BTS|2\rFTS|1\r"
        assert split_messages(data) == [A, B]

    def test_bare_messages_with_lf_and_a_bom(self) -> None:
        data = b"\xef\xbb\xbf" + (A + B).replace(b"\r", b"\n")
        assert split_messages(data) == [A, B]

    def test_mllp_framed_capture(self) -> None:
        assert split_messages(frame(A) + b"\n" + frame(B)) == [A, B]

    def test_a_truncated_capture_or_stray_segment_is_refused(self) -> None:
        with pytest.raises(Hl7MappingError) as info:
            split_messages(frame(A) + b"\x0b" + B)
        assert info.value.code is Hl7ErrorCode.PARSE
        with pytest.raises(Hl7MappingError):
            split_messages(b"PID|1||1\r" + A)

    @pytest.mark.skipif(not REALDATA.is_dir(), reason="real-data corpus missing")
    def test_the_real_samples_concatenated_split_back(self) -> None:
        files = sorted(REALDATA.glob("*.hl7"))
        data = b"\r\n".join(p.read_bytes() for p in files)
        messages = split_messages(data)
        assert len(messages) == len(files) == 8
        assert all(m.startswith(b"MSH|") for m in messages)
