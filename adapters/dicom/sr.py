"""What a report object says: SR content tree text (PS3.3 C.17.3) and document titles.

Only TEXT content items are read, depth first in document order: enough for the free-text
findings of Basic/Enhanced/Comprehensive SR reports, never a rendering of the whole tree.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# SOP classes whose instances are a report on the study rather than images (PS3.4 B.5).
REPORT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
    }
)
_MAX_DEPTH = 32
_MAX_ITEMS = 2000
MAX_TEXT = 4000  # characters of conclusion kept; a longer report is cut with an ellipsis


def is_report(sop_class_uid: str) -> bool:
    """True for SR text reports and encapsulated PDF/CDA reports."""
    return sop_class_uid in REPORT_SOP_CLASSES


def report_text(ds: Dataset) -> tuple[str, ...]:
    """Text Value (0040,A160) of every TEXT item in Content Sequence (0040,A730)."""
    found: list[str] = []
    budget = [_MAX_ITEMS]
    _walk(_get(ds, "ContentSequence"), 0, found, budget)
    return tuple(found)


def _walk(items: Any, depth: int, found: list[str], budget: list[int]) -> None:
    if not items or depth > _MAX_DEPTH:
        return
    for item in items:
        budget[0] -= 1
        if budget[0] < 0:
            return
        if str(_get(item, "ValueType") or "").upper() == "TEXT":
            text = _get(item, "TextValue")
            if isinstance(text, MultiValue):  # a backslash in UT, read as a separator
                text = "\\".join(str(t) for t in text)
            if isinstance(text, str | bytes):
                value = text.decode("latin-1") if isinstance(text, bytes) else text
                value = value.replace("\r\n", "\n").replace("\r", "\n").strip()
                if value:
                    found.append(value)
        _walk(_get(item, "ContentSequence"), depth + 1, found, budget)


def document_title(ds: Dataset) -> str | None:
    """Document Title (0042,0010), else the meaning of Concept Name Code Sequence."""
    title = _get(ds, "DocumentTitle")
    if isinstance(title, str) and title.strip():
        return title.strip()
    names = _get(ds, "ConceptNameCodeSequence")
    if names:
        meaning = _get(names[0], "CodeMeaning")
        if isinstance(meaning, str) and meaning.strip():
            return meaning.strip()
    return None


def conclusion(texts: tuple[str, ...]) -> str | None:
    """The text items as one conclusion, cut at MAX_TEXT characters."""
    joined = "\n".join(texts).strip()
    if not joined:
        return None
    return joined if len(joined) <= MAX_TEXT else joined[: MAX_TEXT - 1].rstrip() + "…"


def _get(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:
        return None
