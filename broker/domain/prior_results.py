"""Ordered items and the prior results found for them (pure; no I/O).

Until the recognition rules engine lands, the decision only tells apart what can be
told from the index alone: no result, only withdrawn or preliminary results, or
results that exist but that no catalog item yet qualifies (NOT_IN_CATALOG).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.domain.results import WITHDRAWN_STATUSES, Coding

PRELIMINARY_STATUSES = frozenset({"registered", "preliminary", "partial"})
# Imaging "DR" orders are met by digital (DX) or computed (CR) radiography (DESIGN.md).
MODALITY_EQUIVALENTS = {"DR": ("DX", "CR", "DR")}


@dataclass(frozen=True)
class OrderedItem:
    """What the doctor is about to order: a code, or an imaging modality and body site."""

    system: str | None = None
    code: str | None = None
    modality: str | None = None
    body_site: Coding | None = None

    @property
    def is_imaging(self) -> bool:
        return self.modality is not None

    def modalities(self) -> tuple[str, ...]:
        if self.modality is None:
            return ()
        m = self.modality.upper()
        return MODALITY_EQUIVALENTS.get(m, (m,))


@dataclass(frozen=True)
class PriorResult:
    result_id: str
    hospital: str
    kind: str
    resource_type: str
    status: str  # the result's status
    item_status: str  # the matching item's own status
    effective: datetime | None
    summary: str
    display: str | None
    recognition_mark: str | None

    @property
    def withdrawn(self) -> bool:
        return self.status in WITHDRAWN_STATUSES or self.item_status in WITHDRAWN_STATUSES

    @property
    def preliminary(self) -> bool:
        return self.item_status in PRELIMINARY_STATUSES


@dataclass(frozen=True)
class Interim:
    decision: str
    candidate: PriorResult | None
    others: tuple[PriorResult, ...]
    en: str
    zh: str


def newest_first(results: list[PriorResult]) -> list[PriorResult]:
    return sorted(
        results,
        key=lambda r: (r.effective is not None, r.effective.timestamp() if r.effective else 0.0),
        reverse=True,
    )


def interim_decision(results: list[PriorResult]) -> Interim:
    """Pick the newest usable prior result and say what can be said without a catalog."""
    ordered = newest_first(results)
    if not ordered:
        return Interim(
            "NO_PRIOR_RESULT",
            None,
            (),
            "No prior result for this item from any hospital.",
            "各医院均无该项目的既往结果。",
        )
    usable = [r for r in ordered if not r.withdrawn and not r.preliminary]
    if usable:
        best = usable[0]
        others = tuple(r for r in ordered if r is not best)
        day = best.effective.date().isoformat() if best.effective else "an unknown date"
        return Interim(
            "NOT_IN_CATALOG",
            best,
            others,
            f"A {best.status} result from {best.hospital} dated {day} exists, but no item "
            "catalog qualifies it for recognition yet; review it before ordering.",
            f"{best.hospital} 于 {day} 有{best.status}结果，但项目目录尚未收录该项目，"
            "暂不能判定互认；请在开单前查阅。",
        )
    if any(not r.withdrawn for r in ordered):
        best = next(r for r in ordered if not r.withdrawn)
        return Interim(
            "PRELIMINARY",
            best,
            tuple(r for r in ordered if r is not best),
            f"The only prior results are preliminary (status {best.item_status}); "
            "a preliminary result is never recognised.",
            f"既往结果仅为初步报告（状态 {best.item_status}），初步结果不予互认。",
        )
    return Interim(
        "WITHDRAWN",
        None,
        tuple(ordered),
        "Every prior result for this item was withdrawn (cancelled or entered in error).",
        "该项目的既往结果均已撤回（取消或录入错误）。",
    )
