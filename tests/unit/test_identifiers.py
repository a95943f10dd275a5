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
from broker.security.pseudonyms import Pseudonymiser


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


class TestUnicodeForms:
    """Values are NFKC-normalised first: one person, one pseudonym, whatever the keyboard."""

    ASCII = "11010519491231002X"
    FULL_WIDTH = "１１０１０５１９４９１２３１００２Ｘ"  # U+FF11.., U+FF38: an IME's full width

    def test_full_width_resident_id_is_the_ascii_one(self) -> None:
        assert validate_resident_id(self.FULL_WIDTH) == self.ASCII
        assert validate_resident_id("１１０１０５１９４９１２３１００２ｘ") == self.ASCII

    def test_full_width_resident_id_gets_the_same_pseudonym(self) -> None:
        pseudonyms = Pseudonymiser(bytes(range(32)))
        ascii_ = normalise(RESIDENT_ID_SYSTEM, self.ASCII, hospital="H001")
        wide = normalise(RESIDENT_ID_SYSTEM, self.FULL_WIDTH, hospital="H002")
        assert ascii_ is not None and wide is not None
        assert wide.value == self.ASCII
        assert pseudonyms.of(wide) == pseudonyms.of(ascii_)

    @pytest.mark.parametrize(
        "digits",
        [
            "٠١٢٣٤٥٦٧٨٩",  # Arabic-Indic
            "۰۱۲۳۴۵۶۷۸۹",  # Extended Arabic-Indic (Persian)
            "०१२३४५६७८९",  # Devanagari
        ],
    )
    def test_other_decimal_digits_are_refused(self, digits: str) -> None:
        # The same number written in another script: isdigit() and int() accept these.
        other = self.ASCII[:17].translate(str.maketrans("0123456789", digits)) + "X"
        assert other.replace("X", "").isdigit()
        with pytest.raises(InvalidIdentifier, match="17 digits 0-9"):
            validate_resident_id(other)
        with pytest.raises(InvalidIdentifier):
            normalise(RESIDENT_ID_SYSTEM, other, hospital="H001")

    def test_superscript_digits_are_not_a_back_door(self) -> None:
        # NFKC turns superscripts into ASCII digits; the number then validates as usual,
        # and so it is the same person, not a second one.
        sup = "¹¹⁰¹⁰⁵¹⁹⁴⁹¹²³¹⁰⁰²X"
        assert validate_resident_id(sup) == self.ASCII

    def test_hospital_scoped_values_are_nfkc_normalised_too(self) -> None:
        wide = normalise("urn:oid:1.2.3.mrn", "ＭＲＮ１２３４５", hospital="H001")
        plain = normalise("urn:oid:1.2.3.mrn", "MRN12345", hospital="H001")
        assert wide is not None and plain is not None and wide.link_key == plain.link_key

    def test_full_width_system_alias_is_recognised(self) -> None:
        ident = normalise("ｓｆｚｈ", self.ASCII, hospital="H001")
        assert ident is not None and ident.scope is IdentifierScope.NATIONAL

    @given(st.text(alphabet="0123456789", min_size=17, max_size=17))
    def test_full_width_of_any_valid_number_validates_to_it(self, first17: str) -> None:
        value = first17 + resident_id_check_digit(first17)
        wide = value.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789X"})
        assert validate_resident_id(wide) == value
