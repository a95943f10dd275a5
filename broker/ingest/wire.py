"""First checks on a message's bytes: size, encoding, JSON syntax and depth."""

from __future__ import annotations

import json
import re
from typing import Any

from broker.domain.rejections import RejectCode, Rejected

_UTF8_BOM = b"\xef\xbb\xbf"
# A whole string literal (skipped) or one bracket.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def decode_json(value: bytes, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Return the message as a JSON object, or raise Rejected naming what is wrong."""
    if len(value) > max_bytes:
        raise Rejected(
            RejectCode.MESSAGE_TOO_LARGE,
            f"message is {len(value)} bytes; the limit is {max_bytes} (MRB_MAX_MESSAGE_BYTES)",
        )
    # Many Windows-built interfaces prefix a BOM; JSON forbids it but it carries no meaning.
    body = value[3:] if value.startswith(_UTF8_BOM) else value
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            RejectCode.INVALID_ENCODING,
            f"value is not valid UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}",
        ) from None
    depth = _max_depth(text)
    if depth > max_depth:
        raise Rejected(
            RejectCode.NESTING_TOO_DEEP,
            f"JSON nests {depth} levels deep; the limit is {max_depth} (MRB_MAX_JSON_DEPTH)",
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected(
            RejectCode.MALFORMED_JSON,
            f"{exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except ValueError:  # Python's JSON reader refuses integers of over 4300 digits
        raise Rejected(
            RejectCode.MALFORMED_JSON, "a number has more digits than a JSON reader accepts"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise Rejected(
            RejectCode.NOT_FHIR, "value is JSON but not a FHIR resource (no resourceType)"
        )
    return doc


def _max_depth(text: str) -> int:
    """Bracket depth outside strings, measured before parsing so no recursion is spent."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        ch = match.group()
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest
