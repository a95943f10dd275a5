"""Identifier systems as data: validation per format, aliases, link keys, consistency.

Every number here is synthetic: built from made-up digits with its check character
computed (GB 11643's own worked example 11010519491231002X aside).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from broker.domain import identifiers
from broker.domain.identifier_systems import (
    Consistency,
    ConsistencyReason,
    ConsistencyStatus,
    IdentifierRegistry,
    IdentifierSystem,
    legacy_to_18,
    validate_fprc,
    validate_gb11643,
    validate_hkmo_travel_permit,
    validate_hmt_residence_permit,
    validate_token,
    validate_tw_travel_permit,
)
from broker.domain.identifiers import (
    DEFAULT_SYSTEM_ALIASES,
    RESIDENT_ID_SYSTEM,
    IdentifierScope,
    InvalidIdentifier,
    PatientIdentifier,
)
from broker.reference.identifier_systems import (
    load_identifier_registry,
    shipped_identifier_registry,
)
from broker.reference.loader import ReferenceDataError, default_schemas_dir
from mrb_wire import resident_id

SCHEMAS = default_schemas_dir()
YAML_PATH = SCHEMAS / "identity" / "identifier-systems.yaml"
SCHEMA_PATH = SCHEMAS / "identity" / "identifier-systems.schema.json"
TODAY = date(2026, 3, 1)


def with_check(first17: str) -> str:
    return first17 + resident_id.check_character(first17)


def rid(area: str, born: str, seq: str) -> str:
    """A synthetic 18-character GB 11643 number."""
    return with_check(area + born + seq)


def wrong_check(value: str) -> str:
    return value[:17] + ("0" if value[17] != "0" else "1")


MAN_1985 = rid("320102", "19850614", "013")  # sequence ends odd: male
WOMAN_1990 = rid("440305", "19900307", "024")  # even: female
HK_PERMIT_RESIDENT = rid("810000", "19791120", "005")
TW_PERMIT_RESIDENT = rid("830000", "20010203", "006")
FOREIGN_2023 = rid("9", "31" + "840" + "19870509", "003")  # 9, area 31, nationality 840
IMPOSSIBLE_DATE = rid("110101", "19990231", "017")  # passes its check character


@pytest.fixture(scope="module")
def registry() -> IdentifierRegistry:
    return shipped_identifier_registry()


def norm(
    registry: IdentifierRegistry, system: str | None, value: str, hospital: str = "H001"
) -> PatientIdentifier:
    ident = registry.normalise(system, value, hospital=hospital)
    assert ident is not None
    return ident


class TestShippedFile:
    def test_yaml_validates_against_its_schema(self) -> None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        doc = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
        assert errors == []

    def test_resident_id_keeps_the_wire_contract_system(self, registry: IdentifierRegistry) -> None:
        assert registry.systems["resident-id"].uri == resident_id.SYSTEM == RESIDENT_ID_SYSTEM

    def test_every_system_cites_a_source_or_is_an_unverified_default(self) -> None:
        doc = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
        for s in doc["systems"]:
            src = s["source"]
            assert src == "unverified-default" or src["document"], s["code"]

    def test_only_trusted_systems_are_the_check_digit_ones(
        self, registry: IdentifierRegistry
    ) -> None:
        trusted = {c for c, s in registry.systems.items() if s.trusted_for_linking}
        assert trusted == {"resident-id", "hmt-residence-permit"}

    def test_shipped_registry_is_read_once(self) -> None:
        assert shipped_identifier_registry() is shipped_identifier_registry()


class TestTodaysBehaviourIsKept:
    """The registry reproduces identifiers.normalise for the resident ID and unknown systems."""

    VALUES = (
        "11010519491231002X",
        " 11010519491231002x ",
        "１１０１０５１９４９１２３１００２Ｘ",
        MAN_1985,
        "110101199003071234",  # wrong check digit
        "1101011990030712",  # 16 characters
        "11010A199003071237",
        "",
        "   ",
    )

    @staticmethod
    def outcome(
        fn: Callable[..., PatientIdentifier | None], system: str | None, value: str
    ) -> PatientIdentifier | str | None:
        try:
            return fn(system, value, hospital="H001")
        except InvalidIdentifier:
            return "invalid"

    @pytest.mark.parametrize("alias", sorted(DEFAULT_SYSTEM_ALIASES))
    @pytest.mark.parametrize("value", VALUES)
    def test_every_default_alias_maps_the_same(
        self, registry: IdentifierRegistry, alias: str, value: str
    ) -> None:
        for spelling in (alias, alias.upper(), f"  {alias} "):
            assert self.outcome(registry.normalise, spelling, value) == self.outcome(
                identifiers.normalise, spelling, value
            )

    @pytest.mark.parametrize(
        "system",
        [None, "", "urn:oid:1.2.3.mrn", "http://example.org/mrn", "  LocalPID ", "ＡＢＣ"],
    )
    @pytest.mark.parametrize("value", ["12345", " 12 345 ", "ａｂ１", "555-44-4444"])
    def test_unknown_systems_are_hospital_scoped_as_today(
        self, registry: IdentifierRegistry, system: str | None, value: str
    ) -> None:
        new = registry.normalise(system, value, hospital="H001")
        assert new == identifiers.normalise(system, value, hospital="H001")
        assert new is not None and new.scope is IdentifierScope.HOSPITAL

    def test_none_value_gives_nothing(self, registry: IdentifierRegistry) -> None:
        assert registry.normalise("sfzh", None, hospital="H001") is None


class TestAliases:
    def test_every_alias_names_its_system(self, registry: IdentifierRegistry) -> None:
        for code, system in registry.systems.items():
            for spelling in (system.uri, *system.aliases):
                for variant in (spelling, spelling.upper(), spelling.lower(), f" {spelling}\t"):
                    found = registry.system_for(variant, hospital="H001")
                    assert found is not None and found.code == code, variant

    def test_full_width_spelling_is_the_same_alias(self, registry: IdentifierRegistry) -> None:
        found = registry.system_for("ＳＦＺＨ", hospital="H001")
        assert found is not None and found.code == "resident-id"

    def test_hl7_national_number_type_names_the_resident_id(
        self, registry: IdentifierRegistry
    ) -> None:
        assert norm(registry, "NNCHN", MAN_1985).system == RESIDENT_ID_SYSTEM

    def test_a_spelling_claimed_by_two_systems_is_refused(self) -> None:
        a = IdentifierSystem(
            "a", "urn:a", "甲", "A", ("X",), IdentifierScope.HOSPITAL, "text", False, False
        )
        b = IdentifierSystem(
            "b", "urn:b", "乙", "B", ("x",), IdentifierScope.HOSPITAL, "text", False, False
        )
        with pytest.raises(ValueError, match="names both"):
            IdentifierRegistry.build([a, b])

    def test_demographics_on_a_format_that_encodes_none_is_refused(self) -> None:
        bad = IdentifierSystem(
            "a", "urn:a", "甲", "A", (), IdentifierScope.NATIONAL, "token", False, True
        )
        with pytest.raises(ValueError, match="encodes no demographics"):
            IdentifierRegistry.build([bad])

    def test_links_as_must_name_a_system_of_the_same_scope(self) -> None:
        local = IdentifierSystem(
            "a", "urn:a", "甲", "A", (), IdentifierScope.HOSPITAL, "text", False, False
        )
        national = IdentifierSystem(
            "b", "urn:b", "乙", "B", (), IdentifierScope.NATIONAL, "text", False, False, "a"
        )
        with pytest.raises(ValueError, match="links_as"):
            IdentifierRegistry.build([local, national])


class TestResidentIdFormat:
    @pytest.mark.parametrize("value", ["11010519491231002X", MAN_1985, WOMAN_1990])
    def test_valid_numbers_pass(self, value: str) -> None:
        assert validate_gb11643(value) == value

    def test_lower_case_x_and_full_width_digits_are_normalised(self) -> None:
        assert validate_gb11643("１１０１０５１９４９１２３１００２ｘ") == "11010519491231002X"

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("1101051949123100", "18 characters"),
            ("11010519491231002X1", "18 characters"),
            ("11010A19491231002X", "17 digits"),
            ("110105194912310021", "check digit"),
            ("11010519491231002Y", "17 digits"),
        ],
    )
    def test_invalid_numbers_say_what_is_wrong(self, value: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validate_gb11643(value)

    def test_impossible_date_with_a_good_check_digit_validates_as_today(self) -> None:
        # Refusing it would change today's semantics; consistency() refuses to link it.
        assert validate_gb11643(IMPOSSIBLE_DATE) == IMPOSSIBLE_DATE


class TestLegacyResidentId:
    def test_fifteen_digits_become_their_eighteen_digit_form(self) -> None:
        # GB 11643's example 11010519491231002X, issued before 1999 as 110105491231002.
        assert legacy_to_18("110105491231002") == "11010519491231002X"
        assert validate_gb11643("110105491231002") == "11010519491231002X"

    def test_fifteen_and_eighteen_digits_give_one_link_key(
        self, registry: IdentifierRegistry
    ) -> None:
        old = norm(registry, "sfzh", "110105491231002", hospital="H001")
        new = norm(registry, RESIDENT_ID_SYSTEM, "11010519491231002x", hospital="H002")
        assert old.link_key == new.link_key
        assert old.scope is IdentifierScope.NATIONAL

    def test_fifteen_digit_number_with_an_impossible_date_is_refused(self) -> None:
        with pytest.raises(InvalidIdentifier, match="impossible birth date 19990231"):
            validate_gb11643("110101990231001")

    def test_fifteen_characters_must_be_digits(self) -> None:
        with pytest.raises(InvalidIdentifier, match="15 digits"):
            validate_gb11643("11010549123100X")


class TestResidencePermit:
    def test_valid_permits_pass(self) -> None:
        assert validate_hmt_residence_permit(HK_PERMIT_RESIDENT) == HK_PERMIT_RESIDENT
        assert validate_hmt_residence_permit(TW_PERMIT_RESIDENT) == TW_PERMIT_RESIDENT

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (MAN_1985, "unknown area code 320102"),
            (rid("840000", "19800101", "001"), "unknown area code 840000"),
            (rid("820000", "19990231", "001"), "impossible birth date 19990231"),
            (wrong_check(HK_PERMIT_RESIDENT), "check"),
            (HK_PERMIT_RESIDENT[:17], "18 characters"),
            ("81000019791120A05X", "17 digits"),
        ],
    )
    def test_invalid_permits_say_what_is_wrong(self, value: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validate_hmt_residence_permit(value)

    def test_permit_and_sfzh_give_one_link_key(self, registry: IdentifierRegistry) -> None:
        as_permit = norm(registry, "港澳台居民居住证", HK_PERMIT_RESIDENT, hospital="H001")
        as_id = norm(registry, "sfzh", HK_PERMIT_RESIDENT, hospital="H002")
        assert as_permit.system == RESIDENT_ID_SYSTEM
        assert as_permit.link_key == as_id.link_key


class TestForeignPermanentResidence:
    def test_2023_number_passes_and_links_as_a_resident_id(
        self, registry: IdentifierRegistry
    ) -> None:
        assert validate_fprc(FOREIGN_2023) == FOREIGN_2023
        ident = norm(registry, "永居证", FOREIGN_2023)
        assert ident.system == RESIDENT_ID_SYSTEM
        assert ident.link_key == norm(registry, "sfzh", FOREIGN_2023, hospital="H009").link_key

    def test_earlier_15_character_card_keeps_its_own_system(
        self, registry: IdentifierRegistry
    ) -> None:
        ident = norm(registry, "外国人永久居留证", "usa311085061501")
        assert ident.value == "USA311085061501"
        assert ident.system == registry.systems["foreign-permanent-resident-id"].uri
        assert ident.scope is IdentifierScope.NATIONAL

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (MAN_1985, "must start with 9"),
            (rid("9", "31840" + "19870230", "003"), "impossible birth date 19870230"),
            (wrong_check(FOREIGN_2023), "check"),
            ("US1311085061501", "3 letters"),
            ("USA31108506150", "18 characters"),
            ("9318401987050900A3", "17 digits"),
        ],
    )
    def test_invalid_cards_say_what_is_wrong(self, value: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validate_fprc(value)


class TestTravelPermits:
    def test_hong_kong_permit_reissue_keeps_its_link_key(
        self, registry: IdentifierRegistry
    ) -> None:
        first = norm(registry, "回乡证", "H1234567800", hospital="H001")
        reissued = norm(registry, "港澳居民来往内地通行证", "h1234567802", hospital="H002")
        assert first.value == "H12345678"
        assert first.link_key == reissued.link_key

    @pytest.mark.parametrize("value", ["M87654321", "Ｍ８７６５４３２１０３"])
    def test_macau_permits_pass(self, value: str) -> None:
        assert validate_hkmo_travel_permit(value) == "M87654321"

    @pytest.mark.parametrize(
        ("value", "message"),
        [("X12345678", "start with H or M"), ("H1234567", "8 or 10"), ("H12345A78", "8 or 10")],
    )
    def test_invalid_hk_macau_permits(self, value: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validate_hkmo_travel_permit(value)

    @pytest.mark.parametrize(
        "value", ["12345678", "1234567801", "1234567801(B)", "１２３４５６７８０１（ｂ）"]
    )
    def test_taiwan_permit_keeps_the_lifetime_number(self, value: str) -> None:
        assert validate_tw_travel_permit(value) == "12345678"

    @pytest.mark.parametrize("value", ["1234567", "123456789", "T1234567", "12345678(BCD)"])
    def test_invalid_taiwan_permits(self, value: str) -> None:
        with pytest.raises(InvalidIdentifier, match="8 digits"):
            validate_tw_travel_permit(value)


class TestCardsAndHospitalNumbers:
    def test_health_card_is_national_and_kept_as_sent(self, registry: IdentifierRegistry) -> None:
        a = norm(registry, "电子健康卡", " A1b2C3d4 ", hospital="H001")
        b = norm(registry, "urn:oid:2.16.156.10011.1.19", "A1b2C3d4", hospital="H002")
        assert a.scope is IdentifierScope.NATIONAL and a.link_key == b.link_key

    @pytest.mark.parametrize(
        ("value", "message"), [("A1 B2", "spaces"), ("A" * 129, "longer"), ("A\x00B", "control")]
    )
    def test_invalid_card_numbers(self, value: str, message: str) -> None:
        with pytest.raises(InvalidIdentifier, match=message):
            validate_token(value)

    def test_medical_insurance_links_only_within_the_hospital(
        self, registry: IdentifierRegistry
    ) -> None:
        a = norm(registry, "医保卡号", "S123456789", hospital="H001")
        b = norm(registry, "医保卡号", "S123456789", hospital="H002")
        assert a.scope is IdentifierScope.HOSPITAL and a.link_key != b.link_key

    @pytest.mark.parametrize(
        ("system", "code"),
        [("MR", "mrn"), ("2.16.156.10011.1.13", "mrn"), ("门诊号", "outpatient-no"),
         ("urn:oid:2.16.156.10011.1.12", "inpatient-no")],
    )  # fmt: skip
    def test_hospital_numbers_are_scoped_by_the_hospital(
        self, registry: IdentifierRegistry, system: str, code: str
    ) -> None:
        a = norm(registry, system, " 000123 ", hospital="H001")
        b = norm(registry, system, "000123", hospital="H002")
        assert a.system == registry.systems[code].uri
        assert a.value == "000123" and a.hospital == "H001"
        assert a.link_key != b.link_key


def _tmp_schemas(tmp_path: Path, doc: dict[str, object]) -> Path:
    folder = tmp_path / "identity"
    folder.mkdir()
    shutil.copy(SCHEMA_PATH, folder / SCHEMA_PATH.name)
    (folder / YAML_PATH.name).write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    return tmp_path


class TestHospitalAliases:
    @pytest.fixture
    def local(self, tmp_path: Path) -> IdentifierRegistry:
        doc = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
        doc["hospitals"] = {
            "H001": {"urn:oid:1.2.156.99.1.2.1": "mrn", "IDNO": "resident-id"},
            "H002": {"urn:oid:1.2.156.99.1.2.1": "outpatient-no"},
        }
        return load_identifier_registry(_tmp_schemas(tmp_path, doc))

    def test_a_hospitals_odd_string_maps_to_a_canonical_system(
        self, local: IdentifierRegistry
    ) -> None:
        ident = norm(local, "URN:OID:1.2.156.99.1.2.1", "778899", hospital="H001")
        assert ident.system == local.systems["mrn"].uri and ident.hospital == "H001"

    def test_the_same_string_means_what_each_hospital_says(self, local: IdentifierRegistry) -> None:
        h2 = norm(local, "urn:oid:1.2.156.99.1.2.1", "778899", hospital="H002")
        h3 = norm(local, "urn:oid:1.2.156.99.1.2.1", "778899", hospital="H003")
        assert h2.system == local.systems["outpatient-no"].uri
        assert h3.system == "urn:oid:1.2.156.99.1.2.1"  # unknown there: as sent

    def test_a_hospital_alias_to_a_national_system_is_validated(
        self, local: IdentifierRegistry
    ) -> None:
        assert norm(local, "idno", MAN_1985, hospital="H001").scope is IdentifierScope.NATIONAL
        with pytest.raises(InvalidIdentifier, match="check digit"):
            local.normalise("idno", wrong_check(MAN_1985), hospital="H001")
        assert norm(local, "idno", MAN_1985, hospital="H002").scope is IdentifierScope.HOSPITAL

    def test_an_alias_to_an_unknown_system_is_refused(self, tmp_path: Path) -> None:
        doc = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
        doc["hospitals"] = {"H001": {"x": "no-such-system"}}
        with pytest.raises(ReferenceDataError, match="unknown no-such-system"):
            load_identifier_registry(_tmp_schemas(tmp_path, doc))

    def test_a_schema_violation_is_reported_with_its_place(self, tmp_path: Path) -> None:
        doc = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
        doc["systems"][7]["trusted_for_linking"] = True  # mrn: hospital scope
        with pytest.raises(ReferenceDataError, match="systems/7"):
            load_identifier_registry(_tmp_schemas(tmp_path, doc))


class TestConsistency:
    def check(
        self, registry: IdentifierRegistry, value: str, born: date | None, sex: str | None
    ) -> Consistency:
        ident = norm(registry, "sfzh", value)
        return registry.consistency(ident, birth_date=born, sex=sex, today=TODAY)

    @pytest.mark.parametrize("sex", ["male", "M", "m", "1", "男"])
    def test_agreeing_record_is_consistent(self, registry: IdentifierRegistry, sex: str) -> None:
        result = self.check(registry, MAN_1985, date(1985, 6, 14), sex)
        assert result.consistent and result.reason is ConsistencyReason.AGREES

    @pytest.mark.parametrize("sex", ["female", "F", "2", "女性"])
    def test_female_codes(self, registry: IdentifierRegistry, sex: str) -> None:
        assert self.check(registry, WOMAN_1990, date(1990, 3, 7), sex).consistent

    def test_birth_date_differs(self, registry: IdentifierRegistry) -> None:
        result = self.check(registry, MAN_1985, date(1985, 6, 15), "male")
        assert result.status is ConsistencyStatus.INCONSISTENT
        assert result.reason is ConsistencyReason.BIRTH_DATE_MISMATCH

    def test_sex_differs(self, registry: IdentifierRegistry) -> None:
        result = self.check(registry, MAN_1985, date(1985, 6, 14), "F")
        assert result.reason is ConsistencyReason.SEX_MISMATCH and not result.consistent

    def test_both_differ_says_so(self, registry: IdentifierRegistry) -> None:
        result = self.check(registry, MAN_1985, date(1970, 1, 1), "female")
        assert result.reason is ConsistencyReason.BIRTH_DATE_MISMATCH
        assert "sex" in result.message

    @pytest.mark.parametrize("born", [date(2026, 2, 27), date(2025, 3, 1), TODAY])
    def test_newborn_under_a_parents_number(self, registry: IdentifierRegistry, born: date) -> None:
        result = self.check(registry, WOMAN_1990, born, "male")
        assert result.reason is ConsistencyReason.NEWBORN_UNDER_OTHER_ID
        assert result.status is ConsistencyStatus.INCONSISTENT

    def test_a_child_older_than_a_year_is_a_plain_mismatch(
        self, registry: IdentifierRegistry
    ) -> None:
        result = self.check(registry, WOMAN_1990, date(2025, 2, 28), "female")
        assert result.reason is ConsistencyReason.BIRTH_DATE_MISMATCH

    @pytest.mark.parametrize(
        ("born", "sex", "reason"),
        [
            (None, None, ConsistencyReason.DEMOGRAPHICS_MISSING),
            (None, "male", ConsistencyReason.BIRTH_DATE_MISSING),
            (date(1985, 6, 14), None, ConsistencyReason.SEX_MISSING),
            (date(1985, 6, 14), "unknown", ConsistencyReason.SEX_MISSING),
            (date(1985, 6, 14), "U", ConsistencyReason.SEX_MISSING),
            (date(1985, 6, 14), "other", ConsistencyReason.SEX_MISSING),
            (date(1985, 6, 14), "O", ConsistencyReason.SEX_MISSING),
        ],
    )
    def test_missing_data_is_unverifiable_not_inconsistent(
        self,
        registry: IdentifierRegistry,
        born: date | None,
        sex: str | None,
        reason: ConsistencyReason,
    ) -> None:
        result = self.check(registry, MAN_1985, born, sex)
        assert result.status is ConsistencyStatus.UNVERIFIABLE and result.reason is reason

    def test_missing_birth_date_still_catches_a_sex_mismatch(
        self, registry: IdentifierRegistry
    ) -> None:
        assert self.check(registry, MAN_1985, None, "F").reason is ConsistencyReason.SEX_MISMATCH

    def test_impossible_id_birth_date_is_inconsistent(self, registry: IdentifierRegistry) -> None:
        result = self.check(registry, IMPOSSIBLE_DATE, None, None)
        assert result.reason is ConsistencyReason.ID_BIRTH_DATE_INVALID

    def test_id_born_after_today_is_inconsistent(self, registry: IdentifierRegistry) -> None:
        future = rid("110101", "20270101", "011")
        result = self.check(registry, future, date(2027, 1, 1), "male")
        assert result.reason is ConsistencyReason.ID_BIRTH_DATE_INVALID

    def test_legacy_number_is_checked_in_its_18_digit_form(
        self, registry: IdentifierRegistry
    ) -> None:
        result = self.check(registry, "110105491231002", date(1949, 12, 31), "female")
        assert result.consistent

    @pytest.mark.parametrize(
        ("system", "value"), [("回乡证", "H1234567800"), ("MR", "1"), ("urn:x", "1")]
    )
    def test_numbers_without_demographics(
        self, registry: IdentifierRegistry, system: str, value: str
    ) -> None:
        ident = norm(registry, system, value)
        result = registry.consistency(ident, birth_date=date(1985, 6, 14), sex="M", today=TODAY)
        assert result.reason is ConsistencyReason.NO_DEMOGRAPHICS_ENCODED
        assert result.status is ConsistencyStatus.UNVERIFIABLE


class TestMayAutoLink:
    AGREES = Consistency(ConsistencyStatus.CONSISTENT, ConsistencyReason.AGREES, "agree")

    def test_consistent_resident_id_links(self, registry: IdentifierRegistry) -> None:
        ident = norm(registry, "sfzh", MAN_1985)
        result = registry.consistency(ident, birth_date=date(1985, 6, 14), sex="M", today=TODAY)
        assert registry.may_auto_link(ident, result)

    @pytest.mark.parametrize(
        ("born", "sex"), [(None, "M"), (date(1985, 6, 14), None), (date(1985, 6, 15), "M")]
    )
    def test_unverifiable_or_inconsistent_does_not(
        self, registry: IdentifierRegistry, born: date | None, sex: str | None
    ) -> None:
        ident = norm(registry, "sfzh", MAN_1985)
        result = registry.consistency(ident, birth_date=born, sex=sex, today=TODAY)
        assert not registry.may_auto_link(ident, result)

    def test_newborn_under_a_parents_number_never_links(self, registry: IdentifierRegistry) -> None:
        ident = norm(registry, "sfzh", WOMAN_1990)
        result = registry.consistency(ident, birth_date=date(2026, 2, 1), sex="F", today=TODAY)
        assert not registry.may_auto_link(ident, result)

    @pytest.mark.parametrize(
        ("system", "value"),
        [("回乡证", "H1234567800"), ("台胞证", "12345678"), ("电子健康卡", "ABC"),
         ("永居证", "USA311085061501"), ("MR", "1"), ("urn:x", "1")],
    )  # fmt: skip
    def test_untrusted_or_hospital_systems_never_link(
        self, registry: IdentifierRegistry, system: str, value: str
    ) -> None:
        assert not registry.may_auto_link(norm(registry, system, value), self.AGREES)

    def test_a_system_unknown_to_the_registry_never_links(
        self, registry: IdentifierRegistry
    ) -> None:
        stray = PatientIdentifier("urn:elsewhere", "1", IdentifierScope.NATIONAL, None)
        assert not registry.may_auto_link(stray, self.AGREES)


_DIGITS = st.text(alphabet="0123456789", min_size=17, max_size=17)


class TestCheckCharacterProperty:
    @given(_DIGITS)
    def test_any_17_digits_with_their_check_character_validate(self, first17: str) -> None:
        registry = shipped_identifier_registry()
        value = with_check(first17)
        ident = registry.normalise("sfzh", value, hospital="H001")
        assert ident is not None and ident.value == value

    @given(_DIGITS, st.integers(min_value=0, max_value=17), st.sampled_from("0123456789X"))
    def test_changing_any_one_character_fails(self, first17: str, pos: int, new: str) -> None:
        value = with_check(first17)
        if new == value[pos] or (pos < 17 and new == "X"):
            return  # not a change, or not a digit where only digits belong
        changed = value[:pos] + new + value[pos + 1 :]
        with pytest.raises(InvalidIdentifier):
            shipped_identifier_registry().normalise("sfzh", changed, hospital="H001")


class TestScopedForLinking:
    """What ingest links and what a caller's lookup finds are the same key."""

    TODAY = date(2026, 12, 3)

    def test_a_trusted_number_the_record_agrees_with_links_across_hospitals(
        self, registry: IdentifierRegistry
    ) -> None:
        ident = norm(registry, "sfzh", MAN_1985)
        agrees = registry.consistency(
            ident, birth_date=date(1985, 6, 14), sex="male", today=self.TODAY
        )
        assert registry.scoped(ident, hospital="H001", consistency=agrees) is ident

    def test_a_record_without_demographics_still_links_on_a_valid_number(
        self, registry: IdentifierRegistry
    ) -> None:
        ident = norm(registry, "sfzh", MAN_1985)
        unknown = registry.consistency(ident, birth_date=None, sex=None, today=self.TODAY)
        linked = registry.scoped(ident, hospital="H001", consistency=unknown)
        assert linked.scope is IdentifierScope.NATIONAL

    @pytest.mark.parametrize(
        ("born", "sex"),
        [(date(1985, 6, 14), "female"), (date(2026, 11, 30), "male"), (date(1990, 1, 1), None)],
    )
    def test_a_contradicted_number_links_only_at_its_hospital(
        self, registry: IdentifierRegistry, born: date, sex: str | None
    ) -> None:
        ident = norm(registry, "sfzh", MAN_1985)
        against = registry.consistency(ident, birth_date=born, sex=sex, today=self.TODAY)
        linked = registry.scoped(ident, hospital="H002", consistency=against)
        assert (linked.scope, linked.hospital, linked.value) == (
            IdentifierScope.HOSPITAL,
            "H002",
            MAN_1985,
        )
        assert linked.link_key != ident.link_key

    def test_an_untrusted_national_system_is_kept_to_its_hospital_both_ways(
        self, registry: IdentifierRegistry
    ) -> None:
        card = norm(registry, "电子健康卡", "HC-0001")
        assert card.scope is IdentifierScope.NATIONAL  # national numbers, never auto-linked
        linked = registry.scoped(card, hospital="H001", consistency=None)
        assert linked.scope is IdentifierScope.HOSPITAL
        assert registry.lookup("电子健康卡", "HC-0001", hospital="H001") == linked

    def test_a_lookup_by_resident_id_is_national(self, registry: IdentifierRegistry) -> None:
        found = registry.lookup("sfzh", WOMAN_1990, hospital="H009")
        assert found is not None and found.scope is IdentifierScope.NATIONAL
        assert registry.lookup("sfzh", "  ", hospital="H009") is None
