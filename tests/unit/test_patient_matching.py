"""Probabilistic patient matching: the fixtures of issue "Patient identity across hospitals",
the shipped rules file, normalisation, blocking, and a small synthetic population."""

from __future__ import annotations

import dataclasses
import shutil
import time
from datetime import date
from pathlib import Path

import pytest

from benchmarks.patient_matching import PRECISION_FLOOR, evaluate, generate_population
from broker.domain.matching import (
    BlockIndex,
    Decision,
    Demographics,
    MatchingRules,
    address_tokens,
    find_candidates,
    match,
    normalise_name,
    normalise_phone,
    normalise_sex,
    resident_id_key,
)
from broker.reference.loader import ReferenceDataError, default_schemas_dir
from broker.reference.matching_rules import load_matching_rules, shipped_matching_rules
from mrb_wire.resident_id import check_character

ADDRESS = "四川省成都市武侯区人民路12号3栋2单元1503室"
PHONE = "13812345678"
BORN = date(1985, 3, 12)
ZHANG_WEI = Demographics(
    family="张", given="伟", sex="male", birth_date=BORN, phone=PHONE, address=ADDRESS
)
RESIDENT_ID = "51010719850312" + "123"
RESIDENT_ID += check_character(RESIDENT_ID)


def as_(record: Demographics, **changes: object) -> Demographics:
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def full(name: str) -> dict[str, str | None]:
    return {"family": None, "given": None, "full_name": name}


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    a: Demographics
    b: Demographics
    same_person: bool
    expected: Decision


TWIN = Demographics(
    family="张", given="子涵", sex="female", birth_date=date(2012, 6, 1), phone=PHONE,
    address=ADDRESS,
)  # fmt: skip
MOTHER = Demographics(
    full_name="李芳", sex="female", birth_date=date(1990, 5, 20), phone=PHONE, address=ADDRESS,
    identifiers=(("resident-id", RESIDENT_ID),),
)  # fmt: skip

CASES = [
    Case("identical", ZHANG_WEI, ZHANG_WEI, True, Decision.MATCH),
    Case("full name unsplit", ZHANG_WEI, as_(ZHANG_WEI, **full("张伟")), True, Decision.MATCH),
    Case("ZHANG WEI", ZHANG_WEI, as_(ZHANG_WEI, **full("ZHANG WEI")), True, Decision.MATCH),
    Case("Zhang Wei", ZHANG_WEI, as_(ZHANG_WEI, **full("Zhang Wei")), True, Decision.MATCH),
    Case("Wei Zhang", ZHANG_WEI, as_(ZHANG_WEI, **full("Wei Zhang")), True, Decision.MATCH),
    Case("ZHANGWEI", ZHANG_WEI, as_(ZHANG_WEI, **full("ZHANGWEI")), True, Decision.MATCH),
    Case(
        "pinyin in split fields",
        ZHANG_WEI,
        as_(ZHANG_WEI, family="ZHANG", given="WEI"),
        True,
        Decision.MATCH,
    ),
    Case(
        "phone with +86 and dashes",
        ZHANG_WEI,
        as_(ZHANG_WEI, phone="+86 138-1234-5678"),
        True,
        Decision.MATCH,
    ),
    # 张玮/张伟 sound alike: a typo, or a twin named alike; with the same birth date the
    # engine cannot tell, so a person reviews it.
    Case(
        "homophone 张玮/张伟", ZHANG_WEI, as_(ZHANG_WEI, given="玮"), True, Decision.POSSIBLE_MATCH
    ),
    Case(
        "homophone, birth date one day off",
        ZHANG_WEI,
        as_(ZHANG_WEI, given="玮", birth_date=date(1985, 3, 13)),
        True,
        Decision.MATCH,
    ),
    Case(
        "typo in a character (张晓明/张晓朋)",
        as_(ZHANG_WEI, given="晓明"),
        as_(ZHANG_WEI, given="晓朋"),
        True,
        Decision.POSSIBLE_MATCH,
    ),
    Case("twins 子涵/子轩", TWIN, as_(TWIN, given="子轩"), False, Decision.POSSIBLE_MATCH),
    Case("twins 子涵/浩", TWIN, as_(TWIN, given="浩", sex="male"), False, Decision.POSSIBLE_MATCH),
    Case(
        "twins, one in pinyin",
        TWIN,
        as_(TWIN, **full("ZHANG ZIXUAN")),
        False,
        Decision.POSSIBLE_MATCH,
    ),
    Case(
        "surname read as a surname (曾 / ZENG)",
        as_(ZHANG_WEI, family="曾", given="丽"),
        as_(ZHANG_WEI, **full("ZENG LI")),
        True,
        Decision.MATCH,
    ),
    Case("changed phone", ZHANG_WEI, as_(ZHANG_WEI, phone="13998765432"), True, Decision.MATCH),
    Case(
        "changed phone, no address",
        as_(ZHANG_WEI, address=None),
        as_(ZHANG_WEI, phone="13998765432", address=None),
        True,
        Decision.POSSIBLE_MATCH,
    ),
    Case(
        "shared family phone: father and son",
        ZHANG_WEI,
        as_(ZHANG_WEI, given="强", birth_date=date(2012, 9, 1)),
        False,
        Decision.NO_MATCH,
    ),
    Case(
        "shared family phone: mother and son",
        ZHANG_WEI,
        as_(MOTHER, identifiers=()),
        False,
        Decision.NO_MATCH,
    ),
    Case(
        "shared family phone, nothing else",
        as_(ZHANG_WEI, address=None),
        Demographics(full_name="王秀英", sex="female", birth_date=date(1950, 1, 2), phone=PHONE),
        False,
        Decision.NO_MATCH,
    ),
    Case(
        "day and month swapped",
        ZHANG_WEI,
        as_(ZHANG_WEI, birth_date=date(1985, 12, 3)),
        True,
        Decision.MATCH,
    ),
    Case(
        "birth year typo",
        ZHANG_WEI,
        as_(ZHANG_WEI, birth_date=date(1958, 3, 12)),
        True,
        Decision.MATCH,
    ),
    Case(
        "birth date wholly different",
        ZHANG_WEI,
        as_(ZHANG_WEI, birth_date=date(1990, 7, 25)),
        True,
        Decision.POSSIBLE_MATCH,
    ),
    Case(
        "missing phone and address",
        ZHANG_WEI,
        as_(ZHANG_WEI, phone=None, address=None),
        True,
        Decision.POSSIBLE_MATCH,
    ),
    Case(
        "missing birth date and sex",
        ZHANG_WEI,
        as_(ZHANG_WEI, birth_date=None, sex=None),
        True,
        Decision.MATCH,
    ),
    Case(
        "address without province, city and room",
        ZHANG_WEI,
        as_(ZHANG_WEI, phone=None, address="武侯区人民路12号3栋2单元"),
        True,
        Decision.MATCH,
    ),
    Case(
        "sex recorded wrongly",
        ZHANG_WEI,
        as_(ZHANG_WEI, sex="female"),
        True,
        Decision.POSSIBLE_MATCH,
    ),
    Case(
        "different resident IDs, same demographics",
        as_(ZHANG_WEI, identifiers=(("resident-id", RESIDENT_ID),)),
        as_(ZHANG_WEI, identifiers=(("resident-id", RESIDENT_ID[:-1] + "Z"),)),
        False,
        Decision.NO_MATCH,
    ),
    Case(
        "unrelated namesake, same birthday, other city",
        ZHANG_WEI,
        as_(ZHANG_WEI, phone="13700001111", address="江苏省南京市鼓楼区中山路1号2栋1单元101室"),
        False,
        Decision.POSSIBLE_MATCH,
    ),
    # The newborn is registered under the mother's resident ID and contact details.
    Case(
        "newborn under the mother's details",
        MOTHER,
        as_(MOTHER, full_name="李芳之子", sex="male", birth_date=date(2026, 11, 30)),
        False,
        Decision.NO_MATCH,
    ),
]


@pytest.fixture(scope="module")
def rules() -> MatchingRules:
    return shipped_matching_rules()


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_fixture_decision(case: Case, rules: MatchingRules) -> None:
    result = match(case.a, case.b, rules)
    assert result.decision is case.expected, result
    assert match(case.b, case.a, rules) == result  # symmetric


def test_no_false_automatic_link_on_the_fixtures(rules: MatchingRules) -> None:
    false_links = [
        c.label
        for c in CASES
        if not c.same_person and match(c.a, c.b, rules).decision is Decision.MATCH
    ]
    assert false_links == []
    assert sum(c.same_person and c.expected is Decision.MATCH for c in CASES) >= 10


def test_twins_are_never_an_automatic_match_whatever_the_names(rules: MatchingRules) -> None:
    names = ["子轩", "子萱", "梓涵", "浩", "子", "涵子", "紫涵", "一涵"]
    for given in names:
        for sex in ("female", "male"):
            assert (
                match(TWIN, as_(TWIN, given=given, sex=sex), rules).decision is not Decision.MATCH
            )


def test_the_result_explains_itself(rules: MatchingRules) -> None:
    result = match(ZHANG_WEI, as_(ZHANG_WEI, given="玮"), rules)
    assert [f.field for f in result.fields] == ["name", "birth_date", "sex", "phone", "address"]
    assert result.level("name") == "homophone"
    assert result.fields[0].weight == pytest.approx(
        rules.fields["name"].levels["homophone"].weight, abs=1e-3
    )
    assert result.total == pytest.approx(sum(f.weight for f in result.fields), abs=1e-2)
    assert result.total >= rules.match_threshold and result.hard_rules == ("twins",)
    missing = match(ZHANG_WEI, as_(ZHANG_WEI, phone=None), rules)
    assert missing.level("phone") == "missing" and missing.fields[3].weight == 0


def test_a_bad_check_digit_is_not_a_trusted_identifier(rules: MatchingRules) -> None:
    typo = RESIDENT_ID[:-2] + str((int(RESIDENT_ID[-2]) + 1) % 10) + RESIDENT_ID[-1]
    assert resident_id_key(RESIDENT_ID) == RESIDENT_ID and resident_id_key(typo) is None
    a = as_(ZHANG_WEI, identifiers=(("resident-id", RESIDENT_ID),))
    trusted = as_(ZHANG_WEI, identifiers=(("resident-id", typo),))  # as if it were trusted
    assert match(a, trusted, rules).decision is Decision.NO_MATCH
    keys = tuple(("resident-id", k) for k in [resident_id_key(typo)] if k)
    checked = match(a, as_(ZHANG_WEI, identifiers=keys), rules)
    assert checked.decision is Decision.MATCH and checked.identifier == "missing"


def test_newborn_shows_the_shared_identifier(rules: MatchingRules) -> None:
    result = match(MOTHER, as_(MOTHER, full_name="李芳之子", birth_date=date(2026, 11, 30)), rules)
    assert result.identifier == "agree" and result.decision is Decision.NO_MATCH
    assert result.hard_rules == ("different_name_and_birth_date",)


def test_merge_then_unmerge_in_the_block_index(rules: MatchingRules) -> None:
    index = BlockIndex(rules)
    index.add("h1", ZHANG_WEI)
    index.add("h2", as_(ZHANG_WEI, **full("ZHANG WEI")))
    index.add("twin", TWIN)
    found = find_candidates(ZHANG_WEI, index, exclude="h1")
    assert [(c.record_id, c.result.decision) for c in found] == [("h2", Decision.MATCH)]
    index.remove("h2")  # unmerged: the record is withdrawn from this person's index
    assert find_candidates(ZHANG_WEI, index, exclude="h1") == []
    assert all("h2" not in block for block in index.blocks.values())
    index.add("h2", as_(ZHANG_WEI, **full("ZHANG WEI")))  # the engine decides as before
    assert find_candidates(ZHANG_WEI, index, exclude="h1") == found


def test_blocks_above_the_limit_find_nothing(rules: MatchingRules) -> None:
    small = dataclasses.replace(rules, blocking=("phone",), max_block_size=2)
    index = BlockIndex(small)
    for n in range(3):  # three people on one switchboard number
        index.add(n, Demographics(full_name=f"王{'一二三'[n]}", phone=PHONE))
    assert find_candidates(Demographics(full_name="王一", phone=PHONE), index) == []


@pytest.mark.parametrize(
    ("sent", "orders", "surnames"),
    [
        (("张", "伟", None), {"zhangwei", "weizhang"}, {"zhang"}),
        ((None, None, "欧阳娜娜"), {"ouyangnana", "nanaouyang"}, {"ouyang"}),
        ((None, None, "ＺＨＡＮＧ  Ｗｅｉ"), {"zhangwei", "weizhang"}, {"zhang", "wei"}),
        ((None, None, "ZHANG, WEI"), {"zhangwei"}, {"zhang"}),
        ((None, None, "ZHANGWEI"), {"zhangwei"}, set()),
        ((None, None, "吕 丽"), {"lvli", "lilv"}, {"lv"}),
        ((None, None, "LÜ LI"), {"lvli", "lilv"}, {"lv", "li"}),
    ],
)
def test_name_normalisation(
    sent: tuple[str | None, str | None, str | None], orders: set[str], surnames: set[str]
) -> None:
    name = normalise_name(*sent)
    assert name is not None and name.orders == orders and name.surnames == surnames


def test_surname_readings_are_added_not_substituted(rules: MatchingRules) -> None:
    plain = normalise_name("曾", "丽", None)
    read = normalise_name("曾", "丽", None, rules.surname_readings)
    assert plain is not None and plain.surnames == {"ceng"}
    assert read is not None and read.surnames == {"ceng", "zeng"}
    assert read.orders == {"cengli", "liceng", "zengli", "lizeng"}


def test_other_normalisation() -> None:
    assert normalise_name(None, None, " ·, ") is None
    assert normalise_phone("+86 138-1234-5678") == PHONE == normalise_phone("0086 13812345678")
    assert (
        normalise_phone("8613812345678") == PHONE
        and normalise_phone("028-85501234") == "02885501234"
    )
    assert normalise_phone("12345") is None
    assert [normalise_sex(s) for s in ("male", "F", "女", "unknown", None)] == [
        "M",
        "F",
        "F",
        None,
        None,
    ]
    assert address_tokens("四川省成都市武侯区人民路12号3栋2单元1503室") == (
        "四川省", "成都市", "武侯区", "人民路", "12号", "3栋", "2单元", "1503室",
    )  # fmt: skip


def test_the_shipped_rules_validate(rules: MatchingRules) -> None:
    assert rules.match_threshold > rules.possible_threshold
    assert {"twins", "different_national_identifiers", "sex_disagrees"} <= {
        h.name for h in rules.hard_rules
    }


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("      surname: {m: ", "      surnames: {m: ", "unknown level surnames"),
        ("  match: {value: 25,", "  match: {value: 5,", "possible_match threshold above"),
        (
            "name: twins, when: {name: [homophone]",
            "name: twins, when: {name: [homophones]",
            "hard rule twins",
        ),
        ("- {key: phone,", "- {key: telephone,", "telephone"),
        ("source: *est}", "}", "source"),
    ],
)
def test_broken_rules_are_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    shipped = default_schemas_dir() / "identity"
    target = tmp_path / "identity"
    target.mkdir()
    shutil.copy(shipped / "matching.schema.json", target)
    text = (shipped / "matching.yaml").read_text(encoding="utf-8")
    assert old in text
    (target / "matching.yaml").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ReferenceDataError, match=message):
        load_matching_rules(tmp_path)


def test_a_small_population_keeps_the_precision_floor(rules: MatchingRules) -> None:
    started = time.perf_counter()
    population = generate_population(300, seed=7)
    result = evaluate(population, rules)
    assert result.records > 450 and result.true_pairs > 150
    assert result.precision >= PRECISION_FLOOR
    assert result.recall >= 0.6  # an engine that links nothing would pass the floor above
    assert result.true_pairs_blocked / result.true_pairs >= 0.99
    assert time.perf_counter() - started < 5
