"""A parsed message as plain, uniformly shaped segments (via python-hl7).

python-hl7 returns a bare string for a field without separators and nested containers
otherwise; this module flattens both into field -> repetitions -> components ->
subcomponents, every leaf unescaped (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\X..\\, \\.br\\)
with the message's own separators.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hl7
import hl7.util

from adapters.hl7v2.errors import ErrorLocation, Hl7ErrorCode, Hl7MappingError

Rep = list[list[str]]  # components -> subcomponents
HL7_NULL = '""'  # "present but null" in HL7 v2: no value for the mapping
_FIELD_PATH = re.compile(r"(OBR|ORC|OBX)-(\d{1,3})(?:\.(\d{1,2}))?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class _WithholdValues(logging.Filter):
    """python-hl7 logs the whole field when an escape sequence is malformed: never PHI."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = "HL7 escape sequence not understood (field value withheld)"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def _withhold_library_values() -> None:
    """Install the filter once, on first use rather than at import."""
    library = logging.getLogger(hl7.util.__file__)  # python-hl7 names its logger by path
    if not any(isinstance(f, _WithholdValues) for f in library.filters):
        library.addFilter(_WithholdValues())


@dataclass
class Segment:
    """One segment; `fields[n]` is field n (MSH-1 and MSH-2 are kept verbatim)."""

    name: str
    fields: list[list[Rep]]
    occurrence: int  # 1-based among segments of the same name in the message

    def reps(self, n: int) -> list[Rep]:
        """Non-empty repetitions of field n."""
        if n >= len(self.fields):
            return []
        return [r for r in self.fields[n] if any(s for comp in r for s in comp)]

    def rep(self, n: int) -> Rep:
        reps = self.reps(n)
        return reps[0] if reps else []

    def get(self, n: int, c: int = 1, s: int = 1) -> str:
        """Field n, component c, subcomponent s of the first repetition; '' when absent."""
        return sub(self.rep(n), c, s)

    def text(self, n: int) -> str:
        """Field n's first repetition with its components joined back (for free text)."""
        return join_components(self.rep(n))


def comp(rep: Rep, c: int) -> list[str]:
    return rep[c - 1] if 0 < c <= len(rep) else []


def sub(rep: Rep, c: int, s: int = 1) -> str:
    parts = comp(rep, c)
    value = parts[s - 1].strip() if 0 < s <= len(parts) else ""
    return "" if value == HL7_NULL else value


def join_components(rep: Rep, sep: str = "^") -> str:
    """A repetition as text: its components joined by `sep`, trailing empties dropped."""
    texts = ["&".join(parts) for parts in rep]
    while texts and not texts[-1]:
        texts.pop()
    return sep.join(texts)


def parse_segments(text: str) -> list[Segment]:
    """Parse CR-separated HL7 text (as charset.decode_message returns) into segments."""
    _withhold_library_values()
    try:
        message = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises assorted types on malformed input
        raise Hl7MappingError(
            Hl7ErrorCode.PARSE, f"not a parseable HL7 v2 message ({type(exc).__name__})"
        ) from None
    seen: dict[str, int] = {}
    segments: list[Segment] = []
    for raw in message:
        name = str(raw[0]).strip()
        seen[name] = seen.get(name, 0) + 1
        fields: list[list[Rep]] = [[[[name]]]]
        for index, field in enumerate(raw[1:], start=1):
            if name == "MSH" and index <= 2:  # separator and encoding characters
                fields.append([[[str(field)]]])
                continue
            try:
                fields.append(_field(message, field))
            except Exception:  # python-hl7's unescape fails on some malformed sequences
                where = ErrorLocation(name, seen[name], index)
                raise Hl7MappingError(
                    Hl7ErrorCode.INVALID_VALUE,
                    f"{where} holds a malformed escape sequence",
                    location=where,
                ) from None
        segments.append(Segment(name, fields, seen[name]))
    return segments


def _field(message: Any, field: Any) -> list[Rep]:
    if isinstance(field, str):
        return [[[_unescape(message, field)]]]
    return [_repetition(message, rep) for rep in field]


def _repetition(message: Any, rep: Any) -> Rep:
    if isinstance(rep, str):
        return [[_unescape(message, rep)]]
    return [_component(message, c) for c in rep]


def _component(message: Any, component: Any) -> list[str]:
    if isinstance(component, str):
        return [_unescape(message, component)]
    return [_unescape(message, str(s)) for s in component]


def _unescape(message: Any, value: str) -> str:
    # FHIR strings may not hold C0 control characters other than tab, CR and LF.
    return _CONTROL.sub("", str(hl7.util.unescape(message, value)))


@dataclass(frozen=True)
class FieldPath:
    """Where an interface carries something: segment, field and optional component."""

    segment: str
    field: int
    component: int = 1

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        m = _FIELD_PATH.fullmatch(text.strip().upper())
        if m is None:
            raise ValueError(f"field path {text!r} must look like OBR-20, OBX-30 or ORC-7.2")
        return cls(m[1], int(m[2]), int(m[3] or 1))

    def read(self, segment: Segment) -> str:
        return segment.get(self.field, self.component)


def find(segments: Sequence[Segment], name: str) -> Segment | None:
    return next((s for s in segments if s.name == name), None)
