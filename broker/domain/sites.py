"""Body sites, sides and imaging protocols as the rules compare them (pure data).

A study's body site arrives as a SNOMED CT code, a DICOM Body Part Examined term or a
Chinese name; the table (schemas/catalog/body-sites.yaml) folds each onto the canonical
SNOMED CT code catalog items use. Equivalence is listed, never inferred from the SNOMED
hierarchy: a knee study must not recognise a lower-limb order.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

PLAIN = "plain"
ENHANCED = "enhanced"
_SEPARATORS = re.compile(r"[\s\-_.,/]+")


def _key(term: str) -> str:
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", term).strip().upper())


@dataclass(frozen=True)
class Site:
    code: str  # canonical SNOMED CT concept id
    display: str
    zh: tuple[str, ...] = ()
    dicom: tuple[str, ...] = ()
    snomed: tuple[str, ...] = ()  # other ids meaning the same examination region
    sided: bool = False


@dataclass(frozen=True)
class Side:
    code: str  # SNOMED CT: 7771000 left, 24028007 right, 51440002 both
    display: str
    zh: str
    dicom: str


@dataclass(frozen=True)
class Protocol:
    code: str
    zh: str
    en: str
    terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteTable:
    sites: Mapping[str, Site] = field(default_factory=dict)
    sides: Mapping[str, Side] = field(default_factory=dict)
    protocols: Mapping[str, Protocol] = field(default_factory=dict)
    _index: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _protocol_index: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, str] = {}
        for site in self.sites.values():
            for term in (site.code, *site.snomed, *site.dicom, *site.zh):
                index.setdefault(_key(term), site.code)
        protocols: dict[str, str] = {}
        for p in self.protocols.values():
            for term in (p.code, p.zh, *p.terms):
                protocols.setdefault(_key(term), p.code)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_protocol_index", protocols)

    def site(self, code_or_term: str | None) -> Site | None:
        """The site a SNOMED CT id, DICOM term or Chinese name means, if the table knows it."""
        if not code_or_term:
            return None
        found = self._index.get(_key(code_or_term))
        return self.sites.get(found) if found else None

    def canonical(self, code_or_term: str | None) -> str | None:
        """The canonical code; an unknown code stays itself (it still equals itself)."""
        site = self.site(code_or_term)
        return site.code if site else code_or_term

    def protocol(self, term: str | None) -> str | None:
        return self._protocol_index.get(_key(term)) if term else None

    def protocol_in_text(self, text: str | None) -> str | None:
        """The one protocol a procedure name states (胸部CT平扫 -> plain, 头颅CTA ->
        angiography); None when it names none or several (平扫+增强)."""
        if not text:
            return None
        key, upper = _key(text), unicodedata.normalize("NFKC", text).upper()
        found: set[str] = set()
        for p in self.protocols.values():
            for term in p.terms:
                if not term.isascii():
                    hit = _key(term) in key
                elif p.code in (PLAIN, ENHANCED) or len(term) < 3:
                    continue  # W, WO, CONTRAST: too loose inside free text
                else:
                    word = re.escape(term.upper())
                    hit = re.search(rf"(?<![A-Z]){word}(?![A-Z])", upper) is not None
                if hit:
                    found.add(p.code)
        return found.pop() if len(found) == 1 else None

    def protocol_name(self, code: str | None) -> tuple[str, str]:
        p = self.protocols.get(code or "")
        if p is None:
            return (code or "未知方案", code or "unknown protocol")
        return (p.zh, p.en)

    def side_name(self, code: str | None) -> tuple[str, str]:
        side = self.sides.get(code or "")
        if side is None:
            return ("侧别未知", "side unknown") if not code else (code, code)
        return (side.zh, side.display.lower())

    def site_name(self, code: str | None) -> tuple[str, str]:
        site = self.site(code)
        if site is None:
            return (code or "?", code or "?")
        return (site.zh[0] if site.zh else site.display, site.display)


def study_protocol(protocol: str | None, contrast: bool | None) -> str | None:
    """A study's protocol: as sent, else from the contrast flag; None when unknown."""
    if protocol:
        return protocol
    if contrast is None:
        return None
    return ENHANCED if contrast else PLAIN


EMPTY_SITES = SiteTable()
