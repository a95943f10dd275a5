"""Raw HL7 v2 bytes to text: BOM, character set (MSH-18, table 0211), segment ends.

Many Chinese LIS send GBK without declaring it in MSH-18; the interface configures a
fallback encoding for them ("gbk" is read as GB 18030, its superset).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError
from adapters.hl7v2.msh import read_header

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

# HL7 table 0211 (alternate character sets) plus spellings seen from real interfaces.
CHARSETS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR14": "shift_jis",  # JIS X 0201 is the single-byte half of Shift JIS
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_1",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "UNICODE": "utf-8",  # deprecated, ambiguous; senders that use it mean UTF-8
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "GB 18030-2000": "gb18030",
    # not in table 0211, but sent by Chinese LIS/HIS
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
}
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True)
class DecodedMessage:
    text: str  # segments separated by CR, ending with CR
    encoding: str  # the Python codec used
    declared: str | None  # MSH-18 as sent, if any


def python_codec(name: str) -> str:
    """The Python codec for a table-0211 name or a codec name; GBK/GB2312 read as GB 18030."""
    key = " ".join(name.strip().upper().split())
    if key in CHARSETS:
        return CHARSETS[key]
    try:
        codec = codecs.lookup(name.strip()).name
    except LookupError:
        raise Hl7MappingError(
            Hl7ErrorCode.UNSUPPORTED_CHARSET,
            f"character set {name.strip()[:40]!r} is not supported; use a table 0211 value "
            "such as 'UNICODE UTF-8', '8859/1' or 'GB 18030-2000'",
            location=ErrorLocation("MSH", 1, 18),
        ) from None
    return "gb18030" if codec in ("gbk", "gb2312") else codec


def decode_message(raw: bytes, *, fallback: str = "utf-8") -> DecodedMessage:
    """Decode one message: MSH-18 decides, else `fallback`; segments end with CR."""
    body = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    if body.startswith(_UTF16_BOMS):
        return _decoded(body, "utf-16", None)
    # Separators and MSH-18 are ASCII in every supported charset but UTF-16/32.
    header = read_header(body[:4096].decode("latin-1"))
    if header is None:
        raise Hl7MappingError(
            Hl7ErrorCode.PARSE, "not an HL7 v2 message: it does not start with an MSH segment"
        )
    declared = header.charset or None
    encoding = python_codec(declared) if declared else python_codec(fallback)
    return _decoded(body, encoding, declared)


def _decoded(body: bytes, encoding: str, declared: str | None) -> DecodedMessage:
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        source = f"MSH-18 {declared!r}" if declared else "the interface's fallback encoding"
        raise Hl7MappingError(
            Hl7ErrorCode.ENCODING,
            f"byte 0x{body[exc.start]:02x} at offset {exc.start} is not valid {encoding} "
            f"({source}); declare MSH-18 or configure the fallback encoding (e.g. gbk)",
        ) from None
    return DecodedMessage(normalise_segments(text), encoding, declared)


def normalise_segments(text: str) -> str:
    """CR, CRLF or LF between segments become CR; blank lines go.

    A line that does not start with a segment id and the field separator is a raw line
    break inside the previous segment's text (LIS that put newlines in report text):
    it is kept there as LF instead of becoming a bogus segment.
    """
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    start = text.lstrip()
    sep = start[3] if start.startswith(("MSH", "FHS", "BHS")) and len(start) > 3 else "|"
    segments: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if _is_segment_start(stripped, sep) or not segments:
            segments.append(stripped)
        else:
            segments[-1] += "\n" + line.rstrip()
    return "".join(s + "\r" for s in segments)


def _is_segment_start(line: str, sep: str) -> bool:
    return _SEGMENT_ID.fullmatch(line[:3]) is not None and (len(line) == 3 or line[3] == sep)
