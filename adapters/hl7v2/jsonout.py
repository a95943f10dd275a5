"""Deterministic JSON for the Bundles, with decimals written exactly as the LIS sent them.

The broker stores message bytes as received, so "4.10" must stay 4.10, not become the
float 4.1 (FHIR decimals carry their precision).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_MARK = "\x00decimal:"
# Text values never hold NUL (segments.py drops control characters), so only Decimal
# values produce this placeholder.
_PLACEHOLDER = re.compile(r'"\\u0000decimal:(-?[0-9.eE+-]+)"')


@dataclass(frozen=True)
class Decimal:
    """A FHIR decimal kept as its literal text (already a valid JSON number)."""

    literal: str

    def __post_init__(self) -> None:
        if _JSON_NUMBER.fullmatch(self.literal) is None:
            raise ValueError("not a JSON number literal")


def _default(value: object) -> Any:
    if isinstance(value, Decimal):
        return _MARK + value.literal
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON; Decimal values become bare number literals."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=_default)
    return _PLACEHOLDER.sub(lambda m: m.group(1), text).encode("utf-8")
