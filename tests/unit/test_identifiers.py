"""Normalising patient identifiers and validating resident ID numbers (GB 11643)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.identifiers import (
    RESIDENT_ID_SYSTEM,
    IdentifierScope,
    InvalidIdentifier,
    normalise,
    patient_resource_key,
    resident_id_check_digit,
    validate_resident_id,
)


class TestResidentId:
    @pytest.mark.parametrize(
        "value", ["11010519491231002X", "440524188001010014", "110101199003071233"]
    )
    def test_known_valid_numbers_pass(self, value: str) -> None:
        assert validate_resident_id(value) == value

    def test_lower_case_x_is_normalised(self) -> None:
        assert validate_resident_id("11010519491231002x") == "11010519491231002X"

    def test_design_example_with_wrong_check_digit_is_refused(self) -> None:
        with pytest.raises(InvalidIdentifier, match="check digit"):
            validate_resident_id("110101199003071234")

    @pytest.mark.parametrize("value", ["1101011990030712", "11010119900307123X9", ""])
    def test_wrong_length_is_refused(self, value: str) -> None:
        with pytest.raises(InvalidIdentifier, match="18 characters"):
            validate_resident_id(value)

    def test_letters_inside_are_refused(self) -> None:
        with pytest.raises(InvalidIdentifier, match="17 digits"):
            validate_resident_id("11010A199003071237")

    @given(st.text(alphabet="0123456789", min_size=17, max_size=17))
    def test_every_number_with_its_check_digit_validates(self, first17: str) -> None:
        value = first17 + resident_id_check_digit(first17)
        assert validate_resident_id(value) == value

    @given(st.text(alphabet="0123456789", min_size=17, max_size=17), st.sampled_from("0123456789X"))
    def test_any_other_check_character_fails(self, first17: str, check: str) -> None:
        if check == resident_id_check_digit(first17):
            return
        with pytest.raises(InvalidIdentifier):
            validate_resident_id(first17 + check)


class TestNormalise:
    def test_alias_systems_map_to_the_canonical_resident_id_system(self) -> None:
        a = normalise("2.16.156.10011.1.3", "11010519491231002X", hospital="H001")
        b = normalise(RESIDENT_ID_SYSTEM, " 11010519491231002x ", hospital="H002")
        assert a is not None and b is not None
        assert a.system == RESIDENT_ID_SYSTEM
        assert a.link_key == b.link_key  # national: the same person whichever hospital
        assert a.scope is IdentifierScope.NATIONAL and a.hospital is None

    def test_mrn_is_scoped_by_the_issuing_hospital(self) -> None:
        a = normalise("urn:oid:1.2.3.mrn", "12345", hospital="H001")
        b = normalise("urn:oid:1.2.3.mrn", "12345", hospital="H002")
        assert a is not None and b is not None
        assert a.scope is IdentifierScope.HOSPITAL
        assert a.link_key != b.link_key

    def test_missing_system_is_hospital_scoped(self) -> None:
        ident = normalise(None, "555-44-4444", hospital="H001")
        assert ident is not None and ident.scope is IdentifierScope.HOSPITAL

    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_empty_value_gives_nothing(self, value: str | None) -> None:
        assert normalise("urn:oid:1.2.3", value, hospital="H001") is None

    def test_invalid_national_id_raises(self) -> None:
        with pytest.raises(InvalidIdentifier):
            normalise(RESIDENT_ID_SYSTEM, "110101199003071234", hospital="H001")

    def test_patient_resource_key_is_hospital_scoped(self) -> None:
        a = patient_resource_key("pat2", hospital="H001")
        b = patient_resource_key("pat2", hospital="H002")
        assert a.link_key != b.link_key
