"""Stored check items read back as written, from this release and earlier ones."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from broker.domain import check_items
from broker.domain.check_items import StoredCheckItem, StoredWarning, stored_items
from broker.domain.recognition import Decision, ItemDecision, Order, Text

KNEE = Order(modality="MR", body_site="72696002", laterality="7771000", contrast=False)


def test_an_item_round_trips_through_json() -> None:
    item = StoredCheckItem(
        requested=KNEE,
        decision=Decision.RECOGNIZABLE.value,
        catalog_code="MR-KNEE",
        category="MR",
        candidate="r-1",
        candidate_hospital="H001",
        candidate_version="2026-11-30T08:00:00+00:00",
        others=("r-2",),
        other_hospitals=("H003",),
        valid_until="2026-12-30",
        fee_saved="450.00",
        warnings=(StoredWarning("newer-result", "r-3", "H004"),),
    )
    assert StoredCheckItem.from_json(item.as_json()) == item
    assert item.recognizable and item.saving == Decimal("450.00")
    assert item.hospitals_found() == {"H001", "H003"}


def test_an_item_stored_by_an_earlier_release_still_reads() -> None:
    legacy = {
        "requested": {"system": "http://loinc.org", "code": "718-7"},
        "catalog_code": "HGB",
        "category": "LAB",
        "decision": "NOT_FOUND",
        "candidate": None,
        "candidate_hospital": None,
        "others": [],
        "valid_until": None,
        "fee_saved": None,
    }  # no candidate_version, other_hospitals or warnings yet
    (item,) = stored_items([legacy])
    assert item.requested == Order(system="http://loinc.org", code="718-7")
    assert item.candidate_version is None and item.warnings == () and item.other_hospitals == ()
    assert not item.recognizable and item.saving == Decimal(0)
    assert "candidate_version" not in item.as_json()


def test_an_item_is_built_from_the_rules_decision() -> None:
    decided = ItemDecision(
        item=None,
        decision=Decision.NOT_IN_CATALOG,
        explanation=Text("not in the catalog", "不在目录中"),
        valid_until=date(2026, 12, 31),
    )
    item = StoredCheckItem.of(KNEE, decided)
    assert item.decision == "NOT_IN_CATALOG" and item.catalog_code is None
    assert item.valid_until == "2026-12-31" and item.fee_saved is None


def test_ledger_and_notice_keys_keep_the_stored_format() -> None:
    """Existing ledgers hold these keys: changing the format would book twice."""
    assert check_items.saving_key("c", 2) == "saving:c:2"
    assert check_items.reversal_key("c", 2) == "reversal:c:2"
    assert check_items.notice_key("c", 2, "m") == "c:2:m"
    assert check_items.flag_key("c", 2, "m") == "flag:c:2:m"
