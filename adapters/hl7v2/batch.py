"""File mode: split an HL7 v2 file into messages.

A file may hold one message, a batch (BHS ... BTS, optionally inside FHS ... FTS), bare
messages one after another, or MLLP frames captured from the wire. Headers and
trailers of files and batches are dropped; each message starts at its MSH. Splitting
works on bytes (segment names and separators are ASCII in every supported charset),
so each message is then decoded with its own MSH-18.
"""

from __future__ import annotations

import re

from adapters.hl7v2.errors import Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.mllp import START_BLOCK, MllpDecoder, Oversize

_UTF8_BOM = b"\xef\xbb\xbf"
_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINES = re.compile(rb"\r\n|\r|\n")


def split_messages(data: bytes, *, max_message_bytes: int = 1024 * 1024) -> list[bytes]:
    """The messages in a file, in order; each keeps its own bytes and ends with CR."""
    body = data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data
    if body.lstrip(b" \t\r\n").startswith(START_BLOCK):  # 0x0B is whitespace to strip()
        return _framed(body, max_message_bytes)
    messages: list[list[bytes]] = []
    for line in _LINES.split(body):
        stripped = line.strip().removeprefix(_UTF8_BOM).strip()  # files joined with `cat`
        if not stripped or stripped[:3] in _ENVELOPE:
            continue
        if stripped[:3] == b"MSH":
            messages.append([stripped])
            continue
        if messages:
            messages[-1].append(line)  # a segment, or a line break inside the previous one
        else:
            raise Hl7MappingError(Hl7ErrorCode.PARSE, "the file has a segment before its first MSH")
    return [b"\r".join(segments) + b"\r" for segments in messages]


def _framed(body: bytes, max_message_bytes: int) -> list[bytes]:
    decoder = MllpDecoder(max_message_bytes)
    out: list[bytes] = []
    for item in decoder.feed(body):
        if isinstance(item, Oversize):
            raise Hl7MappingError(
                Hl7ErrorCode.PARSE,
                f"an MLLP frame holds {item.size} bytes; the limit is {max_message_bytes}",
            )
        out.append(item)
    if decoder.pending:
        raise Hl7MappingError(Hl7ErrorCode.PARSE, "the file ends inside an MLLP frame")
    return out
