"""Who must accept whose results: level-and-grade matrices per province, and regional
agreements across provincial borders (pure; the data is schemas/policy/).

Each matrix and agreement carries its region, dates and source, because provinces set
them (DOMAIN.md): Jiangsu's 苏卫医政〔2022〕18号 has 二级甲等 and above recognise each other;
川渝 (渝卫函〔2021〕553号) lets results cross the Sichuan–Chongqing border.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from broker.domain.registry import HospitalProfile

LAB_KINDS = frozenset({"lab", "panel"})


@dataclass(frozen=True)
class HospitalClass:
    """A set of hospitals by level and grade ("3" = any 三级, "2甲" = 二级甲等, "2-" =
    二级未定等) and optionally ownership."""

    members: frozenset[str]
    ownership: frozenset[str] | None = None

    def holds(self, h: HospitalProfile) -> bool:
        graded = f"{h.level}{h.grade or '-'}"
        in_class = h.level in self.members or graded in self.members
        return in_class and (self.ownership is None or h.ownership in self.ownership)


@dataclass(frozen=True)
class AcceptRule:
    """Hospitals of `ordering` accept results of `issuing` (for the item kinds listed)."""

    ordering: HospitalClass
    issuing: HospitalClass
    kinds: frozenset[str] | None = None  # lab | panel | imaging; None = every kind

    def allows(self, ordering: HospitalProfile, issuer: HospitalProfile, kind: str) -> bool:
        return (
            (self.kinds is None or kind in self.kinds)
            and self.ordering.holds(ordering)
            and self.issuing.holds(issuer)
        )


@dataclass(frozen=True)
class LevelRules:
    """One province's (or the default) acceptance matrix, in force between two dates."""

    region: str  # GB/T 2260 prefix; "" = the default for regions without their own
    rules: tuple[AcceptRule, ...]
    name: str = ""
    effective_from: date | None = None
    effective_to: date | None = None  # inclusive
    source: str | None = None

    def in_force(self, on: date) -> bool:
        return (self.effective_from is None or self.effective_from <= on) and (
            self.effective_to is None or on <= self.effective_to
        )

    def allows(self, ordering: HospitalProfile, issuer: HospitalProfile, kind: str) -> bool:
        return any(r.allows(ordering, issuer, kind) for r in self.rules)


@dataclass(frozen=True)
class Agreement:
    """A regional agreement (川渝, 京津冀鲁, 长三角): results cross the members' borders."""

    id: str
    name_zh: str
    name_en: str
    members: tuple[str, ...]  # GB/T 2260 prefixes
    marks: frozenset[str]  # the marks honoured across the border
    items: frozenset[str] | None = None  # catalog codes; None = every item
    kinds: frozenset[str] | None = None  # or every item of these kinds
    effective_from: date | None = None
    effective_to: date | None = None
    source: str | None = None

    def member(self, region: str) -> bool:
        return any(region.startswith(m) for m in self.members)

    def covers(self, issuer: str, ordering: str, item: str, kind: str, mark: str, on: date) -> bool:
        return (
            self.member(issuer)
            and self.member(ordering)
            and _normal_mark(mark) in {_normal_mark(m) for m in self.marks}
            and (self.items is None or item in self.items)
            and (self.kinds is None or kind in self.kinds)
            and (self.effective_from is None or self.effective_from <= on)
            and (self.effective_to is None or on <= self.effective_to)
        )


def _normal_mark(mark: str) -> str:
    return "".join(mark.split()).upper()


@dataclass(frozen=True)
class ScopeRules:
    matrices: tuple[LevelRules, ...]
    agreements: tuple[Agreement, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)

    def matrix_for(self, region: str, on: date) -> LevelRules | None:
        """The most specific matrix in force for the ordering hospital's region."""
        fitting = [m for m in self.matrices if region.startswith(m.region) and m.in_force(on)]
        return max(fitting, key=lambda m: len(m.region)) if fitting else None

    def agreement(
        self, issuer: str, ordering: str, item: str, kind: str, mark: str, on: date
    ) -> Agreement | None:
        return next(
            (a for a in self.agreements if a.covers(issuer, ordering, item, kind, mark, on)), None
        )

    def agreement_marks(self, region: str, on: date) -> frozenset[str]:
        """Marks a hospital in `region` may carry through the agreements it belongs to."""
        return frozenset(
            _normal_mark(m)
            for a in self.agreements
            if a.member(region)
            and (a.effective_from is None or a.effective_from <= on)
            and (a.effective_to is None or on <= a.effective_to)
            for m in a.marks
        )


def simple_matrix(accepts: Mapping[str, frozenset[str]]) -> LevelRules:
    """A default matrix over levels only: ordering level -> issuing levels it accepts."""
    return LevelRules(
        "",
        tuple(
            AcceptRule(HospitalClass(frozenset({o})), HospitalClass(frozenset(issuing)))
            for o, issuing in accepts.items()
        ),
        name="default",
    )
