"""Element values read defensively: a missing, empty or undecodable value is None.

pydicom decodes lazily, so a malformed value raises when first accessed; an adapter
must publish what it can read rather than fail on, say, a bad Institution Name.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def has(ds: Dataset, keyword: str) -> bool:
    """Whether the data set holds the element (even empty)."""
    try:
        return keyword in ds
    except Exception:
        return False


def get(ds: Dataset, keyword: str) -> Any:
    """An element's value, or None when absent or undecodable (a bad value is no value)."""
    try:
        return ds.get(keyword)
    except Exception:
        return None


def text(ds: Dataset, keyword: str) -> str | None:
    """A string value, trimmed; multi-valued ones joined with a backslash; None if empty."""
    found = get(ds, keyword)
    if found is None:
        return None
    if isinstance(found, bytes):
        found = found.decode("latin-1")
    if isinstance(found, MultiValue | list | tuple):
        found = "\\".join(str(v) for v in found)
    return clean(str(found))


def clean(raw: str | None) -> str | None:
    """Trimmed of spaces and NUL padding; None when nothing is left."""
    if raw is None:
        return None
    trimmed = raw.strip().strip("\x00").strip()
    return trimmed or None


def upper(raw: str | None) -> str | None:
    return raw.upper() if raw else None


def uid(ds: Dataset, keyword: str) -> str | None:
    """A UID as PS3.5 9.1 allows it: digits and dots, at most 64 characters."""
    found = text(ds, keyword)
    if found is None or len(found) > 64 or not all(c.isdigit() or c == "." for c in found):
        return None
    return found


def integer(raw: object) -> int | None:
    """A non-negative IS/US value (1.0 accepted as 1), else None."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        number = float(str(raw).strip())
        whole = int(number)
    except (ValueError, OverflowError):  # not a number, NaN, infinity
        return None
    return whole if whole == number and whole >= 0 else None
