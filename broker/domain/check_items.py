"""A recognition check's answer per item as stored with the check, and the keys that keep
the ledger and the safety notices exactly-once.

Outcomes, savings, safety notices, reports and CDS re-use read these items back long after
the check; one typed record instead of dictionaries read by key in five places. Stored as
JSON in `recognition_check.items`, which holds no identifier: result ids are the broker's
own UUIDs, hospitals are registry codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from broker.domain.recognition import Decision, ItemDecision, Order

Json = dict[str, Any]


@dataclass(frozen=True)
class StoredWarning:
    kind: str
    result_id: str
    hospital: str


@dataclass(frozen=True)
class StoredCheckItem:
    requested: Order
    decision: str  # a Decision value; kept as text so an item from an older release still reads
    catalog_code: str | None = None
    category: str | None = None
    candidate: str | None = None  # the result recognised, if any
    candidate_hospital: str | None = None
    # The candidate's `updated_at` at check time (ISO): an outcome or a CDS re-use checks
    # that the result has not changed since. Absent in checks stored before it existed.
    candidate_version: str | None = None
    others: tuple[str, ...] = ()
    other_hospitals: tuple[str, ...] = ()
    valid_until: str | None = None  # ISO date
    fee_saved: str | None = None  # yuan, as text (exact decimal)
    warnings: tuple[StoredWarning, ...] = field(default=())
    # The fraction of fee_saved the medical-insurance fund pays, as the catalog gave it at
    # check time (exact decimal text); None: the catalog gave none (or an older check).
    fund_share: str | None = None

    @classmethod
    def of(cls, requested: Order, d: ItemDecision) -> StoredCheckItem:
        return cls(
            requested=requested,
            decision=d.decision.value,
            catalog_code=d.item.code if d.item else None,
            category=d.item.category if d.item else None,
            candidate=d.candidate.result_id if d.candidate else None,
            candidate_hospital=d.candidate.hospital if d.candidate else None,
            others=tuple(o.result_id for o in d.others),
            other_hospitals=tuple(sorted({o.hospital for o in d.others})),
            valid_until=d.valid_until.isoformat() if d.valid_until else None,
            fee_saved=str(d.fee_saved) if d.fee_saved is not None else None,
            warnings=tuple(StoredWarning(w.kind, w.result_id, w.hospital) for w in d.warnings),
            fund_share=(
                str(d.item.fund_share.share)
                if d.fee_saved is not None and d.item is not None and d.item.fund_share
                else None
            ),
        )

    @property
    def recognizable(self) -> bool:
        return self.decision == Decision.RECOGNIZABLE.value

    @property
    def saving(self) -> Decimal:
        """The fee an accepted recognition saves (0 when the rules named none)."""
        return Decimal(self.fee_saved or "0")

    @property
    def saving_fund_share(self) -> Decimal | None:
        """The fund's fraction of that fee fixed at check time; None when not given."""
        return Decimal(self.fund_share) if self.fund_share is not None else None

    def hospitals_found(self) -> set[str]:
        """Every hospital whose result the rules looked at for this item."""
        found = {*self.other_hospitals}
        if self.candidate_hospital:
            found.add(self.candidate_hospital)
        return found

    def as_json(self) -> Json:
        out = asdict(self)
        out["others"] = list(self.others)
        out["other_hospitals"] = list(self.other_hospitals)
        out["warnings"] = [asdict(w) for w in self.warnings]
        if self.candidate_version is None:
            del out["candidate_version"]
        if self.fund_share is None:
            del out["fund_share"]
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StoredCheckItem:
        """Tolerant of items stored by earlier releases (fields added later are absent)."""
        requested = raw.get("requested") or {}
        return cls(
            requested=Order(**{k: requested.get(k) for k in _ORDER_FIELDS}),
            decision=str(raw.get("decision") or ""),
            catalog_code=raw.get("catalog_code"),
            category=raw.get("category"),
            candidate=raw.get("candidate"),
            candidate_hospital=raw.get("candidate_hospital"),
            candidate_version=raw.get("candidate_version"),
            others=tuple(raw.get("others") or ()),
            other_hospitals=tuple(raw.get("other_hospitals") or ()),
            valid_until=raw.get("valid_until"),
            fee_saved=raw.get("fee_saved"),
            warnings=tuple(
                StoredWarning(w["kind"], w["result_id"], w["hospital"])
                for w in raw.get("warnings") or ()
            ),
            fund_share=raw.get("fund_share"),
        )


_ORDER_FIELDS = (
    "system",
    "code",
    "modality",
    "body_site",
    "laterality",
    "contrast",
    "protocol",
)


def stored_items(raw: list[Mapping[str, Any]] | None) -> list[StoredCheckItem]:
    return [StoredCheckItem.from_json(r) for r in raw or ()]


# Ledger and notice de-duplication keys: each booking happens once whatever is replayed.
def item_key(check_id: str, index: int) -> str:
    return f"{check_id}:{index}"


def saving_key(check_id: str, index: int) -> str:
    """The saving booked when item `index` of a check is accepted."""
    return f"saving:{item_key(check_id, index)}"


def reversal_key(check_id: str, index: int) -> str:
    """The reversal of that saving when its result is withdrawn."""
    return f"reversal:{item_key(check_id, index)}"


def notice_key(check_id: str, index: int, message_id: str) -> str:
    """One safety notice per accepted item and per message that changed its result."""
    return f"{item_key(check_id, index)}:{message_id}"


def flag_key(check_id: str, index: int, message_id: str) -> str:
    """The zero-amount ledger flag beside a notice that does not reverse the saving."""
    return f"flag:{notice_key(check_id, index, message_id)}"
