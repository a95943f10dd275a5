"""First checks on a message's bytes: size, encoding, JSON syntax and depth."""

from __future__ import annotations

import json
from typing import Any

import orjson

from broker.domain.rejections import RejectCode, Rejected

_UTF8_BOM = b"\xef\xbb\xbf"


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
        # orjson reads valid input about three times as fast as the standard library.
        # Whatever it refuses is read again by the standard library, whose verdicts and
        # messages (encoding offset, line and column, nesting) the DLQ codes rest on. One
        # difference stays: an integer beyond 64 bits is read as a float (FHIR integers
        # are 32-bit; a decimal that long already loses digits past 17 in either reader).
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _standard_decode(body, max_depth)
    depth = _depth_beyond(doc, max_depth)
    if depth is not None:
        raise Rejected(
            RejectCode.NESTING_TOO_DEEP,
            f"JSON nests {depth} levels deep; the limit is {max_depth} (MRB_MAX_JSON_DEPTH)",
        )
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise Rejected(
            RejectCode.NOT_FHIR, "value is JSON but not a FHIR resource (no resourceType)"
        )
    return doc


def _standard_decode(body: bytes, max_depth: int) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(
            RejectCode.INVALID_ENCODING,
            f"value is not valid UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}",
        ) from None
    try:
        doc = json.loads(text)
    except RecursionError:
        # The C decoder counts its nesting against Python's recursion limit (about 1,000)
        # and stops there at once, however deep the input goes: no pre-scan is needed.
        raise Rejected(
            RejectCode.NESTING_TOO_DEEP,
            f"JSON nests deeper than Python's JSON reader allows; the limit is {max_depth} "
            "(MRB_MAX_JSON_DEPTH)",
        ) from None
    except json.JSONDecodeError as exc:
        raise Rejected(
            RejectCode.MALFORMED_JSON,
            f"{exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except ValueError:  # Python's JSON reader refuses integers of over 4300 digits
        raise Rejected(
            RejectCode.MALFORMED_JSON, "a number has more digits than a JSON reader accepts"
        ) from None
    return doc


def _depth_beyond(doc: object, limit: int) -> int | None:
    """The first container depth past `limit` in the parsed document, else None.

    Level by level, without recursion (nothing is spent on hostile input); `type(x) is`
    rather than isinstance, since a JSON reader builds plain dicts and lists only: half
    the time of a depth-first walk with isinstance on FHIR messages.
    """
    level: list[Any] = [doc]
    depth = 1
    while level:
        if depth > limit:
            return depth
        below: list[Any] = []
        add = below.append
        for node in level:
            if type(node) is dict:
                node = node.values()
            elif type(node) is not list:
                continue
            for child in node:
                kind = type(child)
                if kind is dict or kind is list:
                    add(child)
        level = below
        depth += 1
    return None
