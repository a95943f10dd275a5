"""First checks on a message's bytes: size, encoding, JSON syntax and depth."""

from __future__ import annotations

import json
from typing import Any

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


def _depth_beyond(doc: object, limit: int) -> int | None:
    """The first container depth past `limit` in the parsed document, else None.

    Iterative (a list of open containers), so no recursion is spent on hostile input.
    """
    if not isinstance(doc, (dict, list)):
        return None
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(doc, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return depth
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                pending.append((child, depth + 1))
    return None
