"""Mutual-recognition marks (互认标识): "全国HR", "川HR", "泸州HR", "京津冀HR" (pure).

A mark names the area whose hospitals must accept the result. The area table is data
(schemas/policy/recognition-policy.yaml), since marks are created by provinces and cities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from broker.domain.registry import Certification, HospitalProfile

NATIONAL_MARK = "全国HR"
SUFFIX = "HR"


@dataclass(frozen=True)
class MarkTable:
    """Area names used in marks -> GB/T 2260 prefixes they cover."""

    areas: Mapping[str, tuple[str, ...]]

    def regions(self, mark: str) -> tuple[str, ...] | None:
        """Prefixes the mark covers; () for national; None for a mark we cannot read."""
        text = "".join(mark.split())  # "川 HR" and "川HR" are the same mark
        if not text.upper().endswith(SUFFIX):
            return None
        area = text[: -len(SUFFIX)]
        if area in ("全国", "国家"):
            return ()
        return self.areas.get(area)

    def covers(self, mark: str, region: str) -> bool:
        prefixes = self.regions(mark)
        if prefixes is None:
            return False
        return not prefixes or any(region.startswith(p) for p in prefixes)

    def province_mark(self, region: str) -> str | None:
        """The provincial mark of a region (e.g. 510502 -> 川HR)."""
        for area, prefixes in self.areas.items():
            if prefixes == (region[:2],):
                return area + SUFFIX
        return None

    def city_mark(self, region: str) -> str | None:
        """The city mark of a region (e.g. 510502 -> 泸州HR)."""
        for area, prefixes in self.areas.items():
            if prefixes == (region[:4],):
                return area + SUFFIX
        return None

    def derived_mark(self, cert: Certification, issuer: HospitalProfile) -> str | None:
        """The mark a certification implies when the result itself carries none."""
        if cert.body.national:
            return NATIONAL_MARK
        if cert.body.reach == "city":
            return self.city_mark(issuer.region)
        return self.province_mark(issuer.region)

    def supported(
        self,
        mark: str,
        cert: Certification,
        issuer: HospitalProfile,
        agreement_marks: frozenset[str] = frozenset(),
    ) -> bool:
        """Whether the issuer's certification supports a mark it sent: a national mark
        needs national EQA; a provincial body's certificate reaches its province (and the
        marks of agreements the province belongs to); a city body's reaches its city."""
        prefixes = self.regions(mark)
        if prefixes is None:
            return False
        if cert.body.national:
            return True
        if not prefixes:
            return False
        limit = issuer.region[:4] if cert.body.reach == "city" else issuer.region[:2]
        if all(p.startswith(limit) for p in prefixes):
            return True
        return cert.body.reach == "province" and "".join(mark.split()).upper() in agreement_marks
