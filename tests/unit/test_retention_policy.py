"""Result retention as data (schemas/catalog/retention.yaml, broker/domain/retention_policy.py,
broker/reference/retention.py): periods at their edges, the shipped file, and refusals."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from broker.domain.catalog import Catalog
from broker.domain.retention_policy import (
    UNVERIFIED,
    RetentionPeriod,
    RetentionPolicy,
    anchor,
)
from broker.reference.loader import ReferenceDataError, default_schemas_dir, load_catalog
from broker.reference.retention import load_retention, retention_of, retention_path

SCHEMAS = default_schemas_dir()
AT = datetime(2024, 1, 10, 3, 30, tzinfo=UTC)

POLICY = RetentionPolicy(
    default=RetentionPeriod(900),
    categories={"lab": RetentionPeriod(730), "imaging": RetentionPeriod(800)},
    items={"LAB-HB": RetentionPeriod(400), "LAB-PLT": RetentionPeriod(1000)},
    version="t",
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(SCHEMAS)


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(retention_path(SCHEMAS).read_text(encoding="utf-8"))
    return doc


class TestPeriodEdges:
    def test_a_result_is_kept_until_the_day_before_the_limit(self) -> None:
        last_day = AT + timedelta(days=729)
        assert not POLICY.expired("lab", AT, last_day)
        assert not POLICY.expired("lab", AT, AT + timedelta(days=730) - timedelta(microseconds=1))

    def test_it_is_past_retention_at_the_limit_and_after(self) -> None:
        assert POLICY.expires_at("lab", AT) == AT + timedelta(days=730)
        assert POLICY.expired("lab", AT, AT + timedelta(days=730))
        assert POLICY.expired("lab", AT, AT + timedelta(days=731))

    def test_days_are_days_across_a_leap_year(self) -> None:
        # 2024-01-10 + 730 days lands on 2026-01-09, not on the 10th: 2024 has a 29 February.
        assert POLICY.expires_at("lab", AT).date().isoformat() == "2026-01-09"
        from_leap_day = datetime(2024, 2, 29, tzinfo=UTC)
        assert POLICY.expires_at("lab", from_leap_day) == datetime(2026, 2, 28, tzinfo=UTC)

    def test_a_future_anchor_is_not_expired(self) -> None:
        assert not POLICY.expired("lab", AT + timedelta(days=3), AT)

    def test_an_unknown_category_takes_the_default(self) -> None:
        assert POLICY.period("genomics").days == 900
        assert POLICY.expired("genomics", AT, AT + timedelta(days=900))
        assert not POLICY.expired("genomics", AT, AT + timedelta(days=899))


class TestPerItem:
    def test_a_result_of_one_item_takes_the_item_s_period(self) -> None:
        assert POLICY.period("lab", ["LAB-HB"]).days == 400
        assert POLICY.expired("lab", AT, AT + timedelta(days=400), ["LAB-HB"])

    def test_a_result_is_kept_as_long_as_its_longest_kept_row(self) -> None:
        assert POLICY.period("lab", ["LAB-HB", "LAB-PLT"]).days == 1000
        assert POLICY.period("lab", ["LAB-HB", None]).days == 730  # an unmapped row
        assert POLICY.period("lab", ["LAB-HB", "LAB-UNLISTED"]).days == 730
        assert POLICY.period("lab", []).days == 730

    def test_the_shortest_period_bounds_the_scan(self) -> None:
        assert POLICY.shortest.days == 400


def test_the_anchor_is_effective_else_issued_else_received() -> None:
    e, i, r = AT, AT + timedelta(hours=1), AT + timedelta(days=2)
    assert anchor(e, i, r) == e
    assert anchor(None, i, r) == i
    assert anchor(None, None, r) == r


def test_a_period_under_one_day_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        RetentionPeriod(0)


class TestShippedFile:
    def test_it_loads_and_covers_every_result_category(self, catalog: Catalog) -> None:
        policy = load_retention(SCHEMAS, catalog)
        assert set(policy.categories) == {"lab", "imaging", "report"}
        assert policy.version
        assert policy.shortfalls(catalog) == []

    def test_no_period_is_shorter_than_the_longest_validity_window(self, catalog: Catalog) -> None:
        policy = load_retention(SCHEMAS, catalog)
        longest = max(i.validity_days for i in catalog.items.values())
        assert policy.shortest.days >= longest

    def test_every_period_cites_its_source_or_says_it_is_unverified(
        self, shipped: dict[str, Any], catalog: Catalog
    ) -> None:
        policy = load_retention(SCHEMAS, catalog)
        for p in (policy.default, *policy.categories.values(), *policy.items.values()):
            assert p.basis, "every period rests on a text read"
            assert p.source == UNVERIFIED or "》" in p.source
        for entry in (shipped["default"], *shipped["categories"]):
            assert entry["days_source"] == UNVERIFIED or entry["days_source"]["read_at"]


class TestRefusals:
    def test_a_period_shorter_than_a_validity_window_is_refused(
        self, shipped: dict[str, Any], catalog: Catalog
    ) -> None:
        doc = copy.deepcopy(shipped)
        doc["categories"][0]["days"] = 100  # lab; some lab item is recognised for 180 days
        with pytest.raises(ReferenceDataError, match="lab: 100 days < the validity window"):
            retention_of(doc, catalog, where="t")

    def test_an_item_period_shorter_than_its_window_is_refused(
        self, shipped: dict[str, Any], catalog: Catalog
    ) -> None:
        code, item = next((c, i) for c, i in catalog.items.items() if i.validity_days > 1)
        doc = copy.deepcopy(shipped)
        doc["items"] = [dict(shipped["default"], item=code, days=1)]
        with pytest.raises(ReferenceDataError, match=f"item {code}: 1 days"):
            retention_of(doc, catalog, where="t")
        doc["items"][0]["days"] = item.validity_days + 30
        assert retention_of(doc, catalog, where="t").items[code].days == item.validity_days + 30

    def test_an_unknown_item_is_refused(self, shipped: dict[str, Any], catalog: Catalog) -> None:
        doc = copy.deepcopy(shipped)
        doc["items"] = [dict(shipped["default"], item="LAB-NO-SUCH")]
        with pytest.raises(ReferenceDataError, match="unknown item LAB-NO-SUCH"):
            retention_of(doc, catalog, where="t")

    def test_a_category_listed_twice_is_refused(
        self, shipped: dict[str, Any], catalog: Catalog
    ) -> None:
        doc = copy.deepcopy(shipped)
        doc["categories"].append(doc["categories"][0])
        with pytest.raises(ReferenceDataError, match="listed twice"):
            retention_of(doc, catalog, where="t")
