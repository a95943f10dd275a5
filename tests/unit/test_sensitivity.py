"""Sensitive results (issue "Patient rights"): the data, and the pure rule that another
hospital's sensitive result changes no decision, candidate, warning, near miss or
explanation — while the issuing hospital still uses its own."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.recognition import (
    Decision,
    Order,
    PatientContext,
    PriorItem,
    decide,
    resolve_order,
    results_that_matter,
)
from broker.domain.sensitivity import SensitiveCategory, SensitivityTable
from broker.reference.loader import default_schemas_dir, load_catalog
from broker.reference.sensitive import load_sensitivity, sensitivity_of
from tests.unit.test_recognition_rules import (
    CATALOG,
    HB,
    HOSPITALS,
    LOINC,
    ORDER_TIME,
    ORDERS,
    POLICY,
    days_back,
    hospitals_,
    mixed_history,
    obs,
    statuses,
)

SCHEMAS = default_schemas_dir()
HIV_VL = "20447-9"  # listed by code: no catalog item maps to it
# Platelets (777-3) stand for a sensitive catalog item here; 20447-9 for a listed LOINC code.
TABLE = SensitivityTable(
    (
        SensitiveCategory("HIV", "艾滋病", "HIV", loinc=frozenset({HIV_VL})),
        SensitiveCategory("TEST", "测试", "test", items=frozenset({"LAB-PLT"})),
    )
)
PLT = Order(LOINC, "777-3")


class TestData:
    def test_the_shipped_table_is_valid_and_names_catalog_items(self) -> None:
        path = SCHEMAS / "catalog" / "sensitive.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        schema = json.loads(path.with_name("sensitive.schema.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(doc)
        catalog = load_catalog(SCHEMAS)
        table = load_sensitivity(SCHEMAS, catalog)
        codes = {c.code for c in table.categories}
        assert {"HIV", "SYPHILIS", "HBV", "HCV", "PSYCHIATRIC", "GENETIC"} <= codes
        hiv = catalog.items["LAB-ANTI-HIV"]
        assert table.is_sensitive((), hiv) == "HIV"
        assert table.of_item(catalog.items["LAB-HBV-SEROLOGY"]) is not None
        assert table.of_item(catalog.items["LAB-HGB"]) is None
        assert (LOINC, "56888-1") in table.index_codes(catalog)

    def test_every_category_cites_a_text_read_or_says_unverified(self) -> None:
        doc = yaml.safe_load((SCHEMAS / "catalog" / "sensitive.yaml").read_text("utf-8"))
        for c in doc["categories"]:
            cited = c["basis"] != "unverified-default"
            assert cited or c.get("basis_specific") == "unverified-default", c["code"]
            for source in c["basis"] if cited else ():
                assert source.get("read_at"), (c["code"], source["document"])

    def test_a_region_adds_categories_and_unknown_items_are_refused(self) -> None:
        catalog = load_catalog(SCHEMAS)
        doc = yaml.safe_load((SCHEMAS / "catalog" / "sensitive.yaml").read_text("utf-8"))
        extra = {"code": "TB", "name": {"zh": "结核", "en": "TB"}, "basis": "unverified-default"}
        doc["regions"] = [
            {
                "region": "51",
                "name": {"zh": "四川", "en": "Sichuan"},
                "categories": [{**extra, "items": ["LAB-RPR"]}],
            }
        ]
        table = sensitivity_of(doc, catalog, where="test")
        assert table.categories[-1].region == "51"
        doc["regions"][0]["categories"][0]["items"] = ["LAB-NOPE"]
        with pytest.raises(ValueError, match="LAB-NOPE"):
            sensitivity_of(doc, catalog, where="test")


def run(order: Order, prior: list[PriorItem], ordering: str, **kw: object) -> object:
    catalog = CATALOG.for_region(HOSPITALS[ordering].region)
    return decide(
        order,
        order_time=ORDER_TIME,
        ordering=HOSPITALS[ordering],
        hospitals=HOSPITALS,
        catalog=catalog,
        policy=POLICY,
        prior=prior,
        **{"sensitivity": TABLE, **kw},  # type: ignore[arg-type]
    )


@st.composite
def sensitive_results(draw: st.DrawFn, not_from: str) -> list[PriorItem]:
    """Other hospitals' sensitive results: alone, or in a report beside ordinary rows."""
    out: list[PriorItem] = []
    others = sorted(h for h in HOSPITALS if h != not_from)
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        hospital = draw(st.sampled_from(others))
        when = ORDER_TIME - timedelta(days=draw(days_back))
        status = draw(statuses)
        code = draw(st.sampled_from([HIV_VL, "777-3"]))
        out.append(obs(f"s{i}", hospital, code, when, status=status))
        for member in draw(st.sets(st.sampled_from(["718-7", "58410-2"]))):
            out.append(obs(f"s{i}", hospital, member, when, status=status))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.data(), mixed_history(), st.lists(ORDERS | st.just(PLT), min_size=1, max_size=3), hospitals_
)
def test_other_hospitals_sensitive_results_change_no_decision(
    data: st.DataObject, prior: list[PriorItem], orders: list[Order], ordering: str
) -> None:
    prior = [p for p in prior if not any(c.code == "777-3" for c in p.codings)]
    extra = data.draw(sensitive_results(ordering))
    catalog = CATALOG.for_region(HOSPITALS[ordering].region)
    items = [resolve_order(o, catalog, ordering) for o in orders]
    keep = results_that_matter(items, prior + extra, catalog, sensitivity=TABLE, viewer=ordering)
    assert not keep & {p.result_id for p in extra}  # their values are never even opened
    for order in orders:
        assert run(order, prior + extra, ordering) == run(order, prior, ordering)


def test_a_sensitive_item_is_excluded_whether_or_not_another_hospital_has_it() -> None:
    other = [obs("s", "H002", "777-3", ORDER_TIME - timedelta(days=1))]
    without, with_it = run(PLT, [], "H001"), run(PLT, other, "H001")
    assert with_it == without
    assert without.decision is Decision.EXCLUDED  # type: ignore[attr-defined]
    assert "敏感项目" in without.explanation.zh  # type: ignore[attr-defined]


def test_the_issuing_hospital_uses_its_own_and_consent_opens_the_others() -> None:
    own = [obs("s", "H001", "777-3", ORDER_TIME - timedelta(days=1))]
    assert run(PLT, own, "H001").decision is Decision.RECOGNIZABLE  # type: ignore[attr-defined]
    theirs = [replace(p, hospital="H002") for p in own]
    consented = PatientContext(consented=frozenset({"TEST"}))
    assert run(PLT, theirs, "H001", patient=consented) == run(
        PLT, theirs, "H001", sensitivity=SensitivityTable()
    )  # type: ignore[misc]


def test_a_non_sensitive_order_sees_no_report_holding_a_sensitive_row() -> None:
    when = ORDER_TIME - timedelta(days=1)
    report = [obs("s", "H002", "718-7", when), obs("s", "H002", HIV_VL, when)]
    assert run(HB, report, "H001") == run(HB, [], "H001")
