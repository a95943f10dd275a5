"""The 18-digit resident ID number (居民身份证号码, GB 11643-1999) and its check character."""

from __future__ import annotations

import re
import unicodedata

# The FHIR identifier system both sides use for it: its OID as in China's EHR standards (WS 363).
SYSTEM = "urn:oid:2.16.156.10011.1.3"
OID = "2.16.156.10011.1.3"

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
# ASCII only: str.isdigit() would also admit Arabic-Indic, Devanagari, full-width ... digits.
_FIRST17 = re.compile(r"[0-9]{17}", re.ASCII)
_SHAPE = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of the first 17 digits (GB 11643 §5)."""
    if not _FIRST17.fullmatch(first17):
        raise ValueError("expected the first 17 digits (0-9) of a resident ID")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def has_shape(value: str) -> bool:
    """17 ASCII digits then a digit or X (upper case)."""
    return _SHAPE.fullmatch(value) is not None


def canonical(value: str) -> str | None:
    """The ID in ASCII (NFKC: full-width "１１０１" is "1101"), stripped and upper-cased, when
    its shape and check character are right; else None."""
    v = unicodedata.normalize("NFKC", value).strip().upper()
    if not has_shape(v):
        return None
    return v if check_character(v[:17]) == v[17] else None
