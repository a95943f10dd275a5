"""The recognition rules at their edges (pure: no database, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.catalog import Catalog, CatalogItem, ItemKind, RegionOverride
from broker.domain.marks import MarkTable
from broker.domain.recognition import (
    SHANGHAI,
    Decision,
    ItemDecision,
    Order,
    Policy,
    PriorItem,
    decide,
    resolve_order,
    results_that_matter,
    rows_that_matter,
)
from broker.domain.registry import (
    DEFAULT_LEVEL_MATRIX,
    Certification,
    CertifyingBody,
    HospitalProfile,
    LevelMatrix,
)
from broker.domain.results import Coding

LOINC = "http://loinc.org"
HEAD, THORAX, KNEE = "69536005", "51185008", "72696002"
LEFT, RIGHT = "7771000", "24028007"


def fees(amount: str) -> dict[str, Decimal]:
    a = Decimal(amount)
    return {"3": a, "2": a - 2, "1": a - 4}


def lab(
    code: str,
    loinc: str,
    days: int = 7,
    group: str = "HEMATOLOGY",
    fee: str = "10.00",
    **kw: object,
) -> CatalogItem:
    return CatalogItem(
        code, ItemKind.LAB, "LAB", code, code, (loinc,), True, days, group, fees(fee), **kw
    )  # type: ignore[arg-type]


def imaging(
    code: str,
    modality: str,
    site: str,
    *,
    contrast: bool = False,
    laterality: bool = False,
    days: int = 90,
    group: str = "CT",
) -> CatalogItem:
    return CatalogItem(
        code,
        ItemKind.IMAGING,
        modality[:2],
        code,
        code,
        (),
        True,
        days,
        group,
        fees("200.00"),
        modality=modality,
        body_site=site,
        protocol="enhanced" if contrast else "plain",
        laterality=laterality,
    )


ITEMS = [
    lab("LAB-HGB", "718-7"),
    lab("LAB-PLT", "777-3"),
    CatalogItem(
        "LAB-CBC",
        ItemKind.PANEL,
        "LAB",
        "血常规",
        "CBC",
        ("58410-2",),
        True,
        7,
        "HEMATOLOGY",
        fees("20.00"),
        components=("LAB-HGB", "LAB-PLT"),
    ),
    lab("LAB-BNP", "30934-4", group="CHEMISTRY"),
    replace(lab("LAB-CRP", "1988-5", group="IMMUNOLOGY"), recognizable=False),
    imaging("IMG-CT-CHEST", "CT", THORAX),
    imaging("IMG-CT-CHEST-ENH", "CT", THORAX, contrast=True),
    imaging("IMG-MR-KNEE", "MR", KNEE, laterality=True, group="MR"),
    imaging("IMG-DR-CHEST", "DX", THORAX, group="DR"),
]
CATALOG = Catalog(
    "test",
    {i.code: i for i in ITEMS},
    frozenset({"LAB-BNP"}),
    {("H002", "urn:h002:lab", "HGB"): "LAB-HGB"},
    (RegionOverride("51", validity_days={"LAB-HGB": 5}),),
)
POLICY = Policy(
    MarkTable({"川": ("51",), "苏": ("32",), "泸州": ("5105",), "京津冀": ("11", "12", "13")}),
    DEFAULT_LEVEL_MATRIX,
)
YEAR = (date(2026, 1, 1), date(2026, 12, 31))


def certs(
    hospital: str,
    *groups: str,
    body: CertifyingBody = CertifyingBody.PROVINCIAL_EQA,
    valid: tuple[date, date] = YEAR,
) -> tuple[Certification, ...]:
    return tuple(Certification(hospital, g, body, *valid) for g in groups)


ALL = ("HEMATOLOGY", "CHEMISTRY", "CT", "MR", "DR")
HOSPITALS = {
    h.id: h
    for h in [
        HospitalProfile(
            "H001",
            "泸州市人民医院",
            "510502",
            "3",
            "甲",
            alliances=frozenset({"LZ-1"}),
            certifications=certs("H001", *ALL, body=CertifyingBody.NATIONAL_EQA),
        ),
        HospitalProfile(
            "H002", "泸州二院", "510504", "3", "乙", certifications=certs("H002", *ALL)
        ),
        HospitalProfile(
            "H003",
            "纳溪区人民医院",
            "510503",
            "2",
            "甲",
            alliances=frozenset({"LZ-1"}),
            certifications=certs("H003", *ALL),
        ),
        HospitalProfile(
            "H004", "南京社区中心", "320106", "1", None, certifications=certs("H004", *ALL)
        ),
        HospitalProfile("H005", "无认证医院", "510502", "3", None),
        HospitalProfile(
            "H006", "泸州区县医院", "510521", "2", None, certifications=certs("H006", *ALL)
        ),
        HospitalProfile(
            "H008", "泸州社区中心", "510502", "1", None, certifications=certs("H008", *ALL)
        ),
    ]
}
ORDER_TIME = datetime(2026, 5, 20, 9, 0, tzinfo=SHANGHAI)


def at(day: date, hour: int = 8) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, tzinfo=SHANGHAI)


def obs(
    result: str,
    hospital: str,
    loinc: str,
    when: datetime | None,
    *,
    status: str = "final",
    result_status: str | None = None,
    mark: str | None = None,
    system: str = LOINC,
) -> PriorItem:
    return PriorItem(
        result,
        hospital,
        "lab",
        "Observation",
        result_status or status,
        status,
        when,
        f"{loinc} value",
        (Coding(system, loinc),),
        recognition_mark=mark,
    )


def study(
    result: str,
    hospital: str,
    modality: str,
    site: str,
    when: datetime,
    *,
    contrast: bool | None = False,
    laterality: str | None = None,
    status: str = "available",
    mark: str | None = None,
) -> PriorItem:
    return PriorItem(
        result,
        hospital,
        "imaging",
        "ImagingStudy",
        status,
        status,
        when,
        "study",
        (),
        modality,
        site,
        laterality,
        contrast,
        mark,
    )


def check(
    order: Order,
    prior: list[PriorItem],
    *,
    ordering: str = "H001",
    when: datetime = ORDER_TIME,
    emergency: bool = False,
    catalog: Catalog = CATALOG,
    policy: Policy = POLICY,
) -> ItemDecision:
    hospital = HOSPITALS[ordering]
    return decide(
        order,
        order_time=when,
        ordering=hospital,
        hospitals=HOSPITALS,
        catalog=catalog.for_region(hospital.region) if catalog is CATALOG else catalog,
        policy=policy,
        prior=prior,
        emergency=emergency,
    )


HB = Order(LOINC, "718-7")
PLAIN = CATALOG  # the catalog without the Sichuan override, for exact-day tests
NO_REGIONS = replace(CATALOG, regions=())


class TestCatalogMembership:
    def test_unknown_code_is_not_in_catalog(self) -> None:
        d = check(Order(LOINC, "0000-0"), [])
        assert d.decision is Decision.NOT_IN_CATALOG and d.item is None
        assert "0000-0" in d.explanation.en

    def test_negative_list_item_is_excluded_even_with_a_result(self) -> None:
        d = check(Order(LOINC, "30934-4"), [obs("r", "H002", "30934-4", at(date(2026, 5, 19)))])
        assert d.decision is Decision.EXCLUDED and "negative list" in d.explanation.en

    def test_item_the_catalog_marks_not_recognisable_is_excluded(self) -> None:
        assert check(Order(LOINC, "1988-5"), []).decision is Decision.EXCLUDED

    def test_catalog_code_orders_work(self) -> None:
        d = check(
            Order("urn:mrb:catalog", "LAB-HGB"), [obs("r", "H002", "718-7", at(date(2026, 5, 19)))]
        )
        assert d.decision is Decision.RECOGNIZABLE

    def test_mapped_local_code_of_the_issuing_hospital_counts(self) -> None:
        prior = [obs("r", "H002", "HGB", at(date(2026, 5, 19)), system="urn:h002:lab")]
        assert check(HB, prior).decision is Decision.RECOGNIZABLE

    def test_unmapped_local_code_is_not_a_prior_result(self) -> None:
        prior = [obs("r", "H002", "HB", at(date(2026, 5, 19)), system="urn:h002:lab")]
        assert check(HB, prior).decision is Decision.NO_PRIOR_RESULT

    def test_the_same_local_code_from_another_hospital_is_not_mapped(self) -> None:
        prior = [obs("r", "H003", "HGB", at(date(2026, 5, 19)), system="urn:h002:lab")]
        assert check(HB, prior).decision is Decision.NO_PRIOR_RESULT

    def test_no_prior_result(self) -> None:
        d = check(HB, [])
        assert d.decision is Decision.NO_PRIOR_RESULT and d.candidate is None


class TestValidityWindow:
    """LAB-HGB: 7 days (5 in Sichuan by the regional override)."""

    def test_last_valid_day_is_collection_day_plus_validity(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 13)))], catalog=NO_REGIONS)
        assert d.decision is Decision.RECOGNIZABLE
        assert d.valid_until == date(2026, 5, 20)

    def test_one_day_past_the_window_is_expired(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 12)))], catalog=NO_REGIONS)
        assert d.decision is Decision.EXPIRED
        assert "2026-05-19" in d.explanation.en and "8 days" in d.explanation.en

    def test_regional_override_shortens_the_window(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 14)))]
        assert check(HB, prior).decision is Decision.EXPIRED  # Sichuan: 5 days
        assert check(HB, prior, catalog=NO_REGIONS).decision is Decision.RECOGNIZABLE

    def test_days_are_counted_in_shanghai_not_utc(self) -> None:
        # 2026-05-12T16:30Z is 2026-05-13 00:30 in Shanghai: still inside 7 days.
        late = datetime(2026, 5, 12, 16, 30, tzinfo=UTC)
        d = check(HB, [obs("r", "H002", "718-7", late)], catalog=NO_REGIONS)
        assert d.decision is Decision.RECOGNIZABLE and d.valid_until == date(2026, 5, 20)

    def test_order_late_in_the_evening_is_still_that_day(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 13)))]
        late_order = datetime(2026, 5, 20, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
        assert check(HB, prior, when=late_order, catalog=NO_REGIONS).decision is (
            Decision.RECOGNIZABLE
        )
        next_day = datetime(2026, 5, 20, 16, 0, tzinfo=UTC)  # 00:00 on the 21st
        assert check(HB, prior, when=next_day, catalog=NO_REGIONS).decision is Decision.EXPIRED

    def test_a_result_after_the_order_time_is_not_prior(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 21)))])
        assert d.decision is Decision.NO_PRIOR_RESULT

    def test_undated_result_cannot_be_recognised(self) -> None:
        assert check(HB, [obs("r", "H002", "718-7", None)]).decision is Decision.EXPIRED


class TestQualityControl:
    def lapsing(self, valid_to: date) -> dict[str, HospitalProfile]:
        h = replace(
            HOSPITALS["H002"],
            certifications=certs("H002", "HEMATOLOGY", valid=(date(2025, 1, 1), valid_to)),
        )
        return {**HOSPITALS, "H002": h}

    def run(self, hospitals: dict[str, HospitalProfile], result_day: date) -> ItemDecision:
        return decide(
            HB,
            order_time=ORDER_TIME,
            ordering=HOSPITALS["H001"],
            hospitals=hospitals,
            catalog=NO_REGIONS,
            policy=POLICY,
            prior=[obs("r", "H002", "718-7", at(result_day))],
        )

    def test_certification_lapsing_the_day_before_the_result(self) -> None:
        d = self.run(self.lapsing(date(2026, 5, 17)), date(2026, 5, 18))
        assert d.decision is Decision.NOT_QC_CERTIFIED
        assert "2026-05-18" in d.explanation.en and "HEMATOLOGY" in d.explanation.en

    def test_certification_ending_on_the_result_day_still_holds(self) -> None:
        assert self.run(self.lapsing(date(2026, 5, 18)), date(2026, 5, 18)).decision is (
            Decision.RECOGNIZABLE
        )

    def test_certification_lapsing_after_the_result_does_not_matter(self) -> None:
        # Eligibility is judged on the result date, not the order date.
        assert self.run(self.lapsing(date(2026, 5, 19)), date(2026, 5, 18)).decision is (
            Decision.RECOGNIZABLE
        )

    def test_hospital_without_any_certification(self) -> None:
        d = check(HB, [obs("r", "H005", "718-7", at(date(2026, 5, 19)))])
        assert d.decision is Decision.NOT_QC_CERTIFIED

    def test_certification_for_the_single_item_is_enough(self) -> None:
        h = replace(HOSPITALS["H005"], certifications=certs("H005", "LAB-HGB"))
        d = decide(
            HB,
            order_time=ORDER_TIME,
            ordering=HOSPITALS["H001"],
            hospitals={**HOSPITALS, "H005": h},
            catalog=CATALOG,
            policy=POLICY,
            prior=[obs("r", "H005", "718-7", at(date(2026, 5, 19)))],
        )
        assert d.decision is Decision.RECOGNIZABLE


class TestStatus:
    @pytest.mark.parametrize("status", ["final", "amended", "corrected", "appended"])
    def test_recognisable_statuses(self, status: str) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), status=status)]
        assert check(HB, prior).decision is Decision.RECOGNIZABLE

    @pytest.mark.parametrize("status", ["registered", "preliminary", "partial", "unknown"])
    def test_not_final_is_preliminary(self, status: str) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), status=status)]
        assert check(HB, prior).decision is Decision.PRELIMINARY

    @pytest.mark.parametrize("status", ["cancelled", "entered-in-error"])
    def test_withdrawn(self, status: str) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), status=status)]
        d = check(HB, prior)
        assert d.decision is Decision.WITHDRAWN and d.fee_saved is None

    @pytest.mark.parametrize(
        "status",
        [
            *("final", "amended", "corrected", "appended", "registered", "preliminary"),
            *("partial", "unknown", "cancelled", "entered-in-error"),
        ],
    )
    def test_the_chinese_explanation_names_the_status_and_body_in_chinese(
        self, status: str
    ) -> None:
        """A doctor reads the explanation in Chinese: no FHIR status code nor certifying
        body's code inside it (the English one keeps the codes)."""
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), status=status)]
        d = check(HB, prior)
        assert status not in d.explanation.zh, d.explanation.zh
        assert "eqa" not in d.explanation.zh and "imaging-qc" not in d.explanation.zh
        assert status in d.explanation.en or d.decision is Decision.RECOGNIZABLE

    def test_observation_of_a_withdrawn_report_is_withdrawn(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), result_status="entered-in-error")]
        assert check(HB, prior).decision is Decision.WITHDRAWN

    def test_an_older_valid_result_beats_a_newer_withdrawn_one(self) -> None:
        prior = [
            obs("new", "H002", "718-7", at(date(2026, 5, 19)), status="cancelled"),
            obs("old", "H001", "718-7", at(date(2026, 5, 17))),
        ]
        d = check(HB, prior)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.result_id == "old"
        assert [o.decision for o in d.others] == [Decision.WITHDRAWN]


class TestScope:
    def test_lower_level_result_ordered_at_a_higher_level_is_out_of_scope(self) -> None:
        d = check(HB, [obs("r", "H006", "718-7", at(date(2026, 5, 19)))], ordering="H002")
        assert d.decision is Decision.OUT_OF_SCOPE and "level" in d.explanation.en

    def test_higher_level_result_ordered_at_a_lower_level_is_recognisable(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 19)))], ordering="H006")
        assert d.decision is Decision.RECOGNIZABLE

    def test_same_level_recognise_each_other(self) -> None:
        assert (
            check(HB, [obs("r", "H001", "718-7", at(date(2026, 5, 19)))], ordering="H002").decision
            is Decision.RECOGNIZABLE
        )

    def test_alliance_members_recognise_fully_whatever_the_level(self) -> None:
        d = check(HB, [obs("r", "H003", "718-7", at(date(2026, 5, 19)))], ordering="H001")
        assert d.decision is Decision.RECOGNIZABLE

    def test_upward_recognition_where_configured(self) -> None:
        upward = Policy(
            POLICY.marks, LevelMatrix({**DEFAULT_LEVEL_MATRIX.accepts, "3": frozenset({"3", "2"})})
        )
        d = check(
            HB, [obs("r", "H006", "718-7", at(date(2026, 5, 19)))], ordering="H002", policy=upward
        )
        assert d.decision is Decision.RECOGNIZABLE

    def test_mark_of_another_province_does_not_cover_the_order(self) -> None:
        d = check(
            HB, [obs("r", "H004", "718-7", at(date(2026, 5, 19)), mark="苏HR")], ordering="H008"
        )
        assert d.decision is Decision.OUT_OF_SCOPE and "苏HR" in d.explanation.zh

    def test_national_mark_covers_everywhere(self) -> None:
        # H001 (Luzhou) holds national EQA; H004 is in Nanjing.
        d = check(
            HB, [obs("r", "H001", "718-7", at(date(2026, 5, 19)), mark="全国HR")], ordering="H004"
        )
        assert d.decision is Decision.RECOGNIZABLE

    def test_national_mark_without_national_eqa_is_capped_to_the_province(self) -> None:
        d = check(
            HB, [obs("r", "H004", "718-7", at(date(2026, 5, 19)), mark="全国HR")], ordering="H008"
        )
        assert d.decision is Decision.OUT_OF_SCOPE
        assert d.candidate is not None and d.candidate.mark == "苏HR"
        assert "全国HR" in d.explanation.zh and "provincial-eqa" in d.explanation.en

    def test_city_mark_covers_its_city_only(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), mark="泸州HR")]
        assert check(HB, prior, ordering="H006").decision is Decision.RECOGNIZABLE
        chengdu = replace(HOSPITALS["H006"], id="H007", region="510104")
        d = decide(
            HB,
            order_time=ORDER_TIME,
            ordering=chengdu,
            hospitals=HOSPITALS,
            catalog=CATALOG,
            policy=POLICY,
            prior=prior,
        )
        assert d.decision is Decision.OUT_OF_SCOPE

    def test_mark_derived_from_a_provincial_certification(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 19)))], ordering="H006")
        assert d.candidate is not None and d.candidate.mark == "川HR"

    def test_unreadable_mark_gives_way_to_the_derived_one(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), mark="XYZ")]
        d = check(HB, prior)
        assert d.decision is Decision.RECOGNIZABLE
        assert d.candidate is not None and d.candidate.mark == "川HR"
        assert "XYZ" in d.explanation.en

    def test_unreadable_mark_without_certification_is_not_recognised(self) -> None:
        prior = [obs("r", "H005", "718-7", at(date(2026, 5, 19)), mark="XYZ")]
        assert check(HB, prior).decision is Decision.NOT_QC_CERTIFIED

    def test_own_results_are_always_in_scope(self) -> None:
        prior = [obs("r", "H004", "718-7", at(date(2026, 5, 19)), mark="苏HR")]
        assert check(HB, prior, ordering="H004").decision is Decision.RECOGNIZABLE


class TestImaging:
    def test_plain_ct_order_is_met_by_a_plain_study_only(self) -> None:
        plain = Order(modality="CT", body_site=THORAX)
        enhanced = Order(modality="CT", body_site=THORAX, contrast=True)
        prior = [study("s", "H002", "CT", THORAX, at(date(2026, 5, 1)), contrast=True)]
        assert check(plain, prior).decision is Decision.NO_PRIOR_RESULT
        assert check(enhanced, prior).decision is Decision.RECOGNIZABLE

    def test_left_knee_is_not_the_right_knee(self) -> None:
        prior = [study("s", "H002", "MR", KNEE, at(date(2026, 5, 1)), laterality=LEFT)]
        assert check(Order(modality="MR", body_site=KNEE, laterality=LEFT), prior).decision is (
            Decision.RECOGNIZABLE
        )
        assert check(Order(modality="MR", body_site=KNEE, laterality=RIGHT), prior).decision is (
            Decision.NO_PRIOR_RESULT
        )

    def test_knee_order_without_a_side_matches_nothing(self) -> None:
        prior = [study("s", "H002", "MR", KNEE, at(date(2026, 5, 1)), laterality=LEFT)]
        assert check(Order(modality="MR", body_site=KNEE), prior).decision is (
            Decision.NO_PRIOR_RESULT
        )

    @pytest.mark.parametrize("modality", ["DX", "CR", "DR"])
    def test_dr_order_is_met_by_dx_or_cr(self, modality: str) -> None:
        prior = [study("s", "H002", modality, THORAX, at(date(2026, 5, 1)))]
        assert check(Order(modality="DR", body_site=THORAX), prior).decision is (
            Decision.RECOGNIZABLE
        )

    def test_a_report_without_images_is_never_recognised(self) -> None:
        report = PriorItem(
            "rep",
            "H002",
            "report",
            "DiagnosticReport",
            "final",
            "final",
            at(date(2026, 5, 1)),
            "CT chest report",
            (),
            "CT",
            THORAX,
        )
        d = check(Order(modality="CT", body_site=THORAX), [report])
        assert d.decision is Decision.NO_PRIOR_RESULT
        assert "images" in d.explanation.en and d.candidate is not None

    def test_imaging_validity_and_fee(self) -> None:
        d = check(
            Order(modality="CT", body_site=THORAX),
            [study("s", "H002", "CT", THORAX, at(date(2026, 2, 19)))],
        )
        assert d.decision is Decision.RECOGNIZABLE and d.valid_until == date(2026, 5, 20)
        assert d.fee_saved == Decimal("200.00")


class TestPanels:
    def cbc(self, *, plt_status: str = "final", with_plt: bool = True) -> list[PriorItem]:
        rows = [
            obs("cbc", "H002", "58410-2", at(date(2026, 5, 19))),
            obs("cbc", "H002", "718-7", at(date(2026, 5, 19))),
        ]
        if with_plt:
            rows.append(obs("cbc", "H002", "777-3", at(date(2026, 5, 19)), status=plt_status))
        return rows

    def test_panel_with_every_component_is_recognised_and_saves_its_fee_once(self) -> None:
        d = check(Order(LOINC, "58410-2"), self.cbc(), ordering="H006")
        assert d.decision is Decision.RECOGNIZABLE
        assert d.fee_saved == Decimal("18.00")  # the panel's tier-2 fee, not the sum

    def test_one_withdrawn_component_withdraws_the_panel(self) -> None:
        d = check(Order(LOINC, "58410-2"), self.cbc(plt_status="entered-in-error"))
        assert d.decision is Decision.WITHDRAWN and "CBC" in d.explanation.en

    def test_a_missing_component_means_no_complete_prior_panel(self) -> None:
        d = check(Order(LOINC, "58410-2"), self.cbc(with_plt=False))
        assert d.decision is Decision.NO_PRIOR_RESULT and "LAB-PLT" in d.explanation.en

    def test_a_component_can_be_recognised_on_its_own(self) -> None:
        assert check(HB, self.cbc(plt_status="cancelled")).decision is Decision.RECOGNIZABLE


class TestReviewedEdges:
    def test_results_of_an_unregistered_hospital_are_not_qc_certified(self) -> None:
        d = check(HB, [obs("r", "H404", "718-7", at(date(2026, 5, 19)))])
        assert d.decision is Decision.NOT_QC_CERTIFIED and "no longer registered" in (
            d.explanation.en
        )

    def test_a_study_and_its_own_report_are_one_candidate(self) -> None:
        when = at(date(2026, 5, 1))
        report = PriorItem(
            "s",
            "H002",
            "imaging",
            "DiagnosticReport",
            "available",
            "final",
            when,
            "report",
            (),
            "CT",
            THORAX,
        )
        d = check(
            Order(modality="CT", body_site=THORAX), [study("s", "H002", "CT", THORAX, when), report]
        )
        assert d.decision is Decision.RECOGNIZABLE and d.others == ()

    def test_a_result_later_on_the_order_day_is_not_prior(self) -> None:
        later_today = ORDER_TIME + timedelta(hours=2)
        d = check(HB, [obs("r", "H002", "718-7", later_today)])
        assert d.decision is Decision.NO_PRIOR_RESULT

    def test_final_observation_in_a_preliminary_report_is_preliminary(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), result_status="preliminary")]
        assert check(HB, prior).decision is Decision.PRELIMINARY

    def test_panel_with_an_excluded_component_is_excluded(self) -> None:
        negative = replace(NO_REGIONS, negative_list=frozenset({"LAB-PLT"}))
        prior = [
            obs("cbc", "H002", "58410-2", at(date(2026, 5, 19))),
            obs("cbc", "H002", "718-7", at(date(2026, 5, 19))),
            obs("cbc", "H002", "777-3", at(date(2026, 5, 19))),
        ]
        d = check(Order(LOINC, "58410-2"), prior, catalog=negative)
        assert d.decision is Decision.EXCLUDED

    def test_a_mark_written_with_a_space_reads_the_same(self) -> None:
        prior = [obs("r", "H002", "718-7", at(date(2026, 5, 19)), mark="川 HR")]
        assert check(HB, prior, ordering="H006").decision is Decision.RECOGNIZABLE


class TestEmergency:
    def test_emergency_lists_every_candidate_and_says_so(self) -> None:
        prior = [
            obs("a", "H002", "718-7", at(date(2026, 5, 19))),
            obs("b", "H001", "718-7", at(date(2026, 5, 1))),
        ]
        d = check(HB, prior, emergency=True)
        assert d.candidate is not None and len(d.others) == 1
        assert d.notes and "EMERGENCY" in d.notes[0].en


class TestExplanations:
    def test_recognisable_explanation_names_hospital_dates_and_fee(self) -> None:
        d = check(HB, [obs("r", "H002", "718-7", at(date(2026, 5, 16)))], catalog=NO_REGIONS)
        assert "H002" in d.explanation.en and "2026-05-16" in d.explanation.en
        assert "2026-05-23" in d.explanation.en and "¥10.00" in d.explanation.en
        assert "2026-05-23" in d.explanation.zh and "¥10.00" in d.explanation.zh


# -- properties --------------------------------------------------------------------------

statuses = st.sampled_from(["final", "amended", "preliminary", "cancelled", "entered-in-error"])
hospitals_ = st.sampled_from(sorted(HOSPITALS))
days_back = st.integers(min_value=-3, max_value=30)
marks = st.sampled_from([None, "川HR", "苏HR", "全国HR", "泸州HR"])


@st.composite
def prior_results(draw: st.DrawFn) -> list[PriorItem]:
    n = draw(st.integers(min_value=0, max_value=6))
    return [
        obs(
            f"r{i}",
            draw(hospitals_),
            "718-7",
            ORDER_TIME - timedelta(days=draw(days_back), hours=draw(st.integers(0, 23))),
            status=draw(statuses),
            mark=draw(marks),
        )
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(prior_results(), hospitals_)
def test_a_withdrawn_result_is_never_recognised(prior: list[PriorItem], ordering: str) -> None:
    d = check(HB, prior, ordering=ordering)
    if d.decision is Decision.RECOGNIZABLE:
        assert d.candidate is not None and d.candidate.status not in (
            "cancelled",
            "entered-in-error",
        )
    withdrawn = {p.result_id for p in prior if p.status in ("cancelled", "entered-in-error")}
    for v in (d.candidate, *d.others):
        if v is not None and v.result_id in withdrawn:
            assert v.decision is Decision.WITHDRAWN


@settings(max_examples=200, deadline=None)
@given(prior_results(), hospitals_, st.randoms())
def test_the_decision_does_not_depend_on_arrival_order(
    prior: list[PriorItem], ordering: str, rnd: object
) -> None:
    shuffled = prior[:]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = check(HB, prior, ordering=ordering), check(HB, shuffled, ordering=ordering)
    assert a.decision is b.decision and a.fee_saved == b.fee_saved
    assert (a.candidate.result_id if a.candidate else None) in {p.result_id for p in prior} | {None}
    if a.decision is Decision.RECOGNIZABLE:
        assert a.candidate is not None and b.candidate is not None
        assert a.candidate.effective == b.candidate.effective


@settings(max_examples=200, deadline=None)
@given(prior_results(), st.integers(min_value=0, max_value=10))
def test_a_recognisable_result_stays_so_earlier_in_its_window(
    prior: list[PriorItem], earlier: int
) -> None:
    later = check(HB, prior)
    if later.decision is not Decision.RECOGNIZABLE or later.candidate is None:
        return
    when = ORDER_TIME - timedelta(days=earlier)
    if later.candidate.effective is not None and when < later.candidate.effective:
        return
    assert check(HB, prior, when=when).decision is Decision.RECOGNIZABLE


# Results of every kind a patient may have: the analytes and panel members the catalog
# knows, an unknown code, a panel report, imaging studies and their reports.
@st.composite
def mixed_history(draw: st.DrawFn) -> list[PriorItem]:
    out: list[PriorItem] = []
    for i in range(draw(st.integers(min_value=0, max_value=10))):
        when = ORDER_TIME - timedelta(days=draw(days_back), hours=draw(st.integers(0, 23)))
        hospital, status = draw(hospitals_), draw(statuses)
        kind = draw(st.sampled_from(["obs", "panel", "study", "report"]))
        if kind == "obs":
            code = draw(st.sampled_from(["718-7", "777-3", "30934-4", "1988-5", "9999-9"]))
            out.append(obs(f"r{i}", hospital, code, when, status=status))
        elif kind == "panel":  # a CBC report with members, some missing
            for member in draw(st.sets(st.sampled_from(["58410-2", "718-7", "777-3"]))):
                out.append(obs(f"r{i}", hospital, member, when, status=status))
        else:
            modality = draw(st.sampled_from(["CT", "MR", "DX"]))
            site = draw(st.sampled_from([THORAX, KNEE]))
            item = study(f"r{i}", hospital, modality, site, when, status=status)
            if kind == "report":
                item = replace(item, resource_type="DiagnosticReport", result_kind="report")
            out.append(item)
    return out


ORDERS = st.sampled_from(
    [
        HB,
        Order(LOINC, "777-3"),
        Order(LOINC, "58410-2"),
        Order(LOINC, "1988-5"),
        Order(LOINC, "0000-0"),
        Order(modality="CT", body_site=THORAX),
        Order(modality="CT", body_site=THORAX, contrast=True),
        Order(modality="MR", body_site=KNEE, laterality="left"),
        Order(modality="DX", body_site=THORAX),
    ]
)


@settings(max_examples=400, deadline=None)
@given(mixed_history(), st.lists(ORDERS, min_size=1, max_size=3), hospitals_)
def test_results_that_cannot_matter_change_no_decision(
    prior: list[PriorItem], orders: list[Order], ordering: str
) -> None:
    """Storage opens only the results `results_that_matter` keeps (the check's hot path):
    every decision, candidate, warning and explanation is the same without the others."""
    hospital = HOSPITALS[ordering]
    catalog = CATALOG.for_region(hospital.region)
    items = [resolve_order(o, catalog, ordering) for o in orders]
    keep = results_that_matter(items, prior, catalog)
    kept = [p for p in prior if p.result_id in keep]
    for order in orders:
        assert check(order, kept, ordering=ordering) == check(order, prior, ordering=ordering)


@settings(max_examples=400, deadline=None)
@given(mixed_history(), st.lists(ORDERS, min_size=1, max_size=3), hospitals_)
def test_storage_row_filter_holds_every_result_that_matters(
    prior: list[PriorItem], orders: list[Order], ordering: str
) -> None:
    """Storage reads only the results holding a row `rows_that_matter` admits (by index):
    a superset of what `results_that_matter` keeps, so no decision can change."""
    catalog = CATALOG.for_region(HOSPITALS[ordering].region)
    items = [resolve_order(o, catalog, ordering) for o in orders]
    rows = rows_that_matter(items, catalog)
    found = {p.result_id for p in prior if rows.admits(p)}
    assert results_that_matter(items, prior, catalog) <= found


def test_the_row_filter_names_every_code_meaning_the_item() -> None:
    """Catalog code, LOINC codes and hospitals' local codes: whatever system sent them."""
    hgb = CATALOG.items["LAB-HGB"]
    rows = rows_that_matter([hgb], CATALOG)
    assert {"LAB-HGB", *hgb.loinc, "HGB"} <= rows.codes and not rows.imaging
    assert rows_that_matter([None], CATALOG).empty
