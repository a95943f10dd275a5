"""The pure pieces of PDQm with demographics: the engine's decision as a match grade and a
score, combining with identifier matches, selection, and the ITI-78 query and comparison
(broker/fhir/pdq.py, broker/fhir/pdq_search.py)."""

from __future__ import annotations

from datetime import date

import pytest

from broker.domain.demographics import Demographics
from broker.domain.errors import Invalid
from broker.domain.matching import Decision, MatchResult
from broker.fhir import pdq, pdq_search
from broker.reference.matching_rules import shipped_matching_rules

RULES = shipped_matching_rules()
BORN = date(1985, 3, 12)
C = Demographics(full_name="王小明", sex="male", birth_date=BORN, phone="13800138000")


def result(decision: Decision, total: float) -> MatchResult:
    return MatchResult(decision, total, (), "missing", ())


def test_the_score_bands_follow_the_decision_and_the_weight() -> None:
    top, low = RULES.match_threshold, RULES.possible_threshold
    gap = top - low
    assert pdq.score_of(result(Decision.MATCH, top), RULES) == (pdq.CERTAIN, 0.9)
    assert pdq.score_of(result(Decision.MATCH, top + 10 * gap), RULES) == (pdq.CERTAIN, 0.99)
    # Capped by a hard rule above the match threshold: probable.
    assert pdq.score_of(result(Decision.POSSIBLE_MATCH, top), RULES) == (pdq.PROBABLE, 0.7)
    assert pdq.score_of(result(Decision.POSSIBLE_MATCH, top + gap), RULES) == (pdq.PROBABLE, 0.89)
    assert pdq.score_of(result(Decision.POSSIBLE_MATCH, low), RULES) == (pdq.POSSIBLE, 0.5)
    mid = pdq.score_of(result(Decision.POSSIBLE_MATCH, low + gap / 2), RULES)
    assert mid == (pdq.POSSIBLE, 0.595)
    assert pdq.score_of(result(Decision.NO_MATCH, 40), RULES) is None  # a hard rule's veto


def test_the_engine_grades_people_best_record_first() -> None:
    people = {
        "c": [("H001", C), ("H002", Demographics(full_name="王小民", sex="male", birth_date=BORN))],
        "d": [("H001", Demographics(full_name="李华", sex="female", birth_date=BORN))],
    }
    found = pdq.score_people(C, people, RULES)
    assert [(m.person_id, m.grade, m.by) for m in found] == [("c", pdq.CERTAIN, "demographics")]
    no_phone = Demographics(full_name="王小明", sex="male", birth_date=BORN)
    (probable,) = pdq.score_people(no_phone, people, RULES)
    assert probable.grade == pdq.PROBABLE and 0.7 <= probable.score < 0.9
    typo = Demographics(full_name="王小民", sex="male", birth_date=BORN)
    graded = {m.person_id: m.grade for m in pdq.score_people(typo, {"c": people["c"][:1]}, RULES)}
    assert graded == {"c": pdq.POSSIBLE}


def test_a_different_national_identifier_vetoes_the_demographics() -> None:
    theirs = Demographics(**{**C.__dict__, "identifiers": (("national", "1"),)})
    mine = Demographics(**{**C.__dict__, "identifiers": (("national", "2"),)})
    assert pdq.score_people(mine, {"c": [("H001", theirs)]}, RULES) == []


def test_an_identifier_match_wins_and_select_bounds_the_answer() -> None:
    ident = pdq.Match("a", 1.0, pdq.CERTAIN, None)
    demo = [
        pdq.Match("a", 0.95, pdq.CERTAIN, None, "demographics"),
        pdq.Match("b", 0.6, pdq.POSSIBLE, None, "demographics"),
        pdq.Match("c", 0.75, pdq.PROBABLE, None, "demographics"),
    ]
    combined = pdq.combine([ident], demo)
    assert [(m.person_id, m.by) for m in combined] == [
        ("a", "identifier"),
        ("c", "demographics"),
        ("b", "demographics"),
    ]
    request = pdq.MatchRequest((), False, None, ())
    assert len(pdq.select(combined, request)) == 3
    assert [m.person_id for m in pdq.select(combined, pdq.MatchRequest((), True, None, ()))] == [
        "a"
    ]
    assert len(pdq.select(combined, pdq.MatchRequest((), False, 1, ()))) == 1
    many = [pdq.Match(str(i), 0.5, pdq.POSSIBLE, None) for i in range(30)]
    assert len(pdq.select(many, pdq.MatchRequest((), False, None, ()))) == pdq.DEFAULT_COUNT
    assert len(pdq.select(many, pdq.MatchRequest((), False, 500, ()))) == pdq.MAX_COUNT


def test_the_request_patient_is_read_as_ingest_reads_one() -> None:
    request = pdq.parse_match(
        {
            "resourceType": "Patient",
            "name": [
                {"use": "nickname", "text": "小明"},
                {"use": "official", "family": "王", "given": ["小明"]},
            ],
            "gender": "male",
            "birthDate": "1985-03-12",
            "telecom": [{"system": "email", "value": "x@y"}, {"system": "phone", "value": "138"}],
            "maritalStatus": {"text": "M"},
        }
    )
    assert request.demographics == Demographics(
        family="王", given="小明", sex="male", birth_date=BORN, phone="138"
    )
    assert request.not_compared == ("maritalStatus",)
    assert pdq.parse_match({"resourceType": "Patient", "gender": "male"}).demographics is None
    with pytest.raises(Invalid):
        pdq.parse_match({"resourceType": "Patient", "name": {"text": "x"}})
    assert pdq.blocking_keys(request.demographics, RULES) >= {"bd:1985-03-12"}


def test_the_pdqm_query_is_parsed_and_bounded() -> None:
    q = pdq_search.parse_query(
        [
            ("family:exact", "王"),
            ("given", "小明"),
            ("birthdate", "eq1985-03-12"),
            ("_count", "500"),
            ("x", "1"),
        ],
        strict=False,
    )
    assert (q.family, q.given, q.birthdate, q.count) == ("王", "小明", BORN, pdq_search.MAX_COUNT)
    assert q.ignored and "'x'" in q.ignored[0]
    assert q.parameters == ("birthdate", "family", "given")
    for bad in ([("family", "王")], [("gender", "male")], [("birthdate", "ge1985-03-12")]):
        with pytest.raises(Invalid):
            pdq_search.parse_query(bad, strict=False)
    with pytest.raises(Invalid):
        pdq_search.parse_query([("birthdate", "1985-03-12"), ("x", "1")], strict=True)
    assert pdq_search.parse_query([("identifier", "s|v")], strict=False).identifier == ("s", "v")


@pytest.mark.parametrize(
    ("params", "fits"),
    [
        ({"family": "王", "given": "小明"}, True),
        ({"family": "WANG", "given": "XIAOMING"}, True),
        ({"family": "wang"}, True),
        ({"given": "xiaoming"}, True),
        ({"family": "章"}, False),  # characters compare as characters
        ({"family": "王", "given": "小民"}, False),
        ({"gender": "female"}, False),
        ({"telecom": "+86 138 0013 8000"}, True),
        ({"telecom": "13800138001"}, False),
        ({"birthdate": date(1985, 3, 13)}, False),
    ],
)
def test_a_record_fits_the_query_exactly_after_normalisation(
    params: dict[str, object], fits: bool
) -> None:
    query = pdq_search.PdqQuery(**params)  # type: ignore[arg-type]
    assert pdq_search.fits(query, C) is fits
    split = Demographics(family="王", given="小明", sex="M", birth_date=BORN, phone="13800138000")
    assert pdq_search.fits(query, split) is fits


# -- ITI-78: address, active, mothersMaidenName, domains, paging, CapabilityStatement -----

ADDRESS = "广东省广州市天河区体育西路1号"


@pytest.mark.parametrize(
    ("params", "fits"),
    [
        ({"address": "天河区"}, True),
        ({"address": "天河"}, True),  # the last part as a prefix (FHIR string search)
        ({"address": "天河", "address_exact": True}, False),
        ({"address": "广州市天河区体育西路"}, True),  # a run of parts
        ({"address": "广州市体育西路"}, False),  # not a run
        ({"address": "海淀区"}, False),
        ({"city": "广州"}, True),  # with or without its suffix
        ({"city": "广州市"}, True),
        ({"city": "深圳"}, False),
        ({"city": "天河"}, False),  # below the city: not a city
        ({"state": "广东"}, True),
        ({"state": "广东省"}, True),
        ({"state": "广西"}, False),
        ({"state": "广东", "city": "广州", "address": "体育西路1号"}, True),
    ],
)
def test_the_address_and_its_parts_are_compared_with_the_stored_address(
    params: dict[str, object], fits: bool
) -> None:
    query = pdq_search.PdqQuery(birthdate=BORN, **params)  # type: ignore[arg-type]
    assert pdq_search.fits(query, Demographics(address=ADDRESS, birth_date=BORN)) is fits
    # Nothing stored: no address parameter fits; none given: any record fits.
    assert pdq_search.fits(query, Demographics(birth_date=BORN)) is False
    assert pdq_search.address_fits(pdq_search.PdqQuery(birthdate=BORN), None) is True


def test_a_municipality_is_both_state_and_city() -> None:
    stored = "北京市朝阳区建国路88号"
    for params in ({"state": "北京"}, {"city": "北京市"}, {"address": "朝阳区建国路"}):
        assert pdq_search.address_fits(pdq_search.PdqQuery(**params), stored)  # type: ignore[arg-type]


def test_the_iti_78_parameters_are_parsed_as_documented() -> None:
    q = pdq_search.parse_query(
        [
            ("birthdate", "1985-03-12"),
            ("address:exact", "天河区"),
            ("address-city", "广州"),
            ("address-state", "广东"),
            ("active", "true"),
            ("identifier", "urn:a|,urn:b|"),
            ("identifier", "urn:a|"),
            ("address-postalcode", "510000"),
        ],
        strict=False,
    )
    assert (q.address, q.address_exact, q.city, q.state, q.active) == (
        "天河区",
        True,
        "广州",
        "广东",
        True,
    )
    assert q.identifier is None and q.domains == ("urn:a", "urn:b")
    assert len(q.ignored) == 1 and "postal code" in q.ignored[0]
    assert pdq_search.parse_query([("_id", "p"), ("active", "false")], strict=False).active is False
    both = pdq_search.parse_query([("identifier", "s|v"), ("identifier", "d|")], strict=False)
    assert (both.identifier, both.domains) == (("s", "v"), ("d",))
    for bad in (
        [("birthdate", "1985-03-12"), ("mothersMaidenName", "李")],  # not stored: always 400
        [("birthdate", "1985-03-12"), ("active", "yes")],
        [("address", "天河区")],  # an address alone does not block
        [("identifier", "a|1"), ("identifier", "b|2")],
        [("identifier", "a|1,b|2")],
        [("identifier", "|1")],
        [("birthdate", "1985-03-12"), ("address-city:contains", "广")],
    ):
        with pytest.raises(Invalid):
            pdq_search.parse_query(bad, strict=False)
    with pytest.raises(Invalid) as refused:
        pdq_search.parse_query([("_id", "p"), ("mothersMaidenName", "李")], strict=False)
    assert refused.value.issue == "not-supported" and "not stored" in refused.value.detail
    for part in ("address-postalcode", "address-country"):
        with pytest.raises(Invalid):
            pdq_search.parse_query([("birthdate", "1985-03-12"), (part, "x")], strict=True)


def test_an_unknown_domain_answers_as_iti_78_case_4() -> None:
    outcome = pdq_search.DomainUnknown("urn:x").outcome
    first = outcome["issue"][0]
    assert (first["severity"], first["code"], first["diagnostics"]) == (
        "warning",
        "not-found",
        "targetSystem not found",
    )
    assert "urn:x" in outcome["issue"][1]["diagnostics"]


def test_the_capability_statement_lists_every_iti_78_parameter() -> None:
    from datetime import UTC, datetime

    from broker.fhir.documents import capability_statement

    statement = capability_statement("http://x/fhir", datetime.now(UTC), "1")
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    params = {p["name"]: p for p in patient["searchParam"]}
    iti_78 = {
        "_id",
        "active",
        "family",
        "given",
        "identifier",
        "telecom",
        "birthdate",
        "address",
        "address-city",
        "address-country",
        "address-postalcode",
        "address-state",
        "gender",
        "mothersMaidenName",
    }
    assert set(params) == iti_78
    assert "Not stored" in params["mothersMaidenName"]["documentation"]
    assert "Not stored" in params["address-postalcode"]["documentation"]
    assert params["identifier"]["documentation"].startswith("Doctors:")
    assert "PDQm" in params["identifier"]["documentation"]


def test_a_sealed_cursor_carries_no_search_in_clear() -> None:
    import base64
    from datetime import UTC, datetime

    from broker.domain.actors import Actor, Role
    from broker.fhir.cursors import CursorSigner, Page

    signer = CursorSigner(b"k" * 32)
    client = Actor("https://his.example/", Role.ADAPTER, "H001")
    now = datetime.now(UTC)
    page = Page("Patient", (("family", "王"), ("birthdate", "1985-03-12")), 10, 10)
    cursor = signer.issue(page, client, now, sealed=True)
    payload = cursor.split(".")[0]
    clear = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert "1985" not in clear and "family" not in clear
    assert signer.open(cursor, "Patient", client, now) == page
    with pytest.raises(Invalid):  # another key cannot open (or verify) it
        CursorSigner(b"j" * 32).open(cursor, "Patient", client, now)
