"""Reading FHIR search queries: tokens, patients, dates, result parameters, strictness."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from broker.api.routes.fhir import FhirEdgeError, refusal_outcome
from broker.domain.errors import Refused
from broker.fhir.params import (
    MAX_COUNT,
    PatientSelector,
    Search,
    Token,
    TokenFilter,
    check_prefer,
    parse_search,
    parse_token,
    patient_id,
    split_values,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PID = "0b5f2f4e-2d7a-4a53-9d36-0d6f0c1d2e3f"


def parse(rtype: str, *pairs: tuple[str, str], strict: bool = False) -> Search:
    return parse_search(rtype, pairs, strict=strict, zone=ZoneInfo("Asia/Shanghai"), now=NOW)


def refused(rtype: str, *pairs: tuple[str, str], strict: bool = False) -> FhirEdgeError:
    with pytest.raises(Refused) as caught:
        parse(rtype, *pairs, strict=strict)
    return refusal_outcome(caught.value)  # as the FHIR edge answers it


class TestTokens:
    def test_the_four_token_forms(self) -> None:
        assert parse_token("718-7") == Token(None, "718-7")
        assert parse_token("http://loinc.org|718-7") == Token("http://loinc.org", "718-7")
        assert parse_token("|718-7") == Token("", "718-7")
        assert parse_token("http://loinc.org|") == Token("http://loinc.org", None)

    def test_escapes(self) -> None:
        assert split_values(r"a\,b,c") == [r"a\,b", "c"]
        assert parse_token(r"urn:x|a\|b") == Token("urn:x", "a|b")
        assert parse_token(r"a\\b") == Token(None, "a\\b")

    def test_a_bare_bar_or_two_bars_are_refused(self) -> None:
        with pytest.raises(Refused):
            parse_token("|")
        with pytest.raises(Refused):
            parse_token("a|b|c")

    def test_commas_are_or_and_repeats_are_and(self) -> None:
        s = parse(
            "Observation",
            ("patient", PID),
            ("code", "http://loinc.org|718-7,http://loinc.org|777-3"),
            ("category", "laboratory"),
        )
        assert s.tokens == (
            TokenFilter(
                "code", (Token("http://loinc.org", "718-7"), Token("http://loinc.org", "777-3"))
            ),
            TokenFilter("category", (Token(None, "laboratory"),)),
        )

    def test_status_is_a_token_and_lets_withdrawn_results_in(self) -> None:
        assert not parse("DiagnosticReport", ("patient", PID)).status_given
        s = parse("DiagnosticReport", ("patient", PID), ("status", "entered-in-error,final"))
        assert s.status_given


class TestOnePatient:
    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("patient", PID),
            ("patient", f"Patient/{PID}"),
            ("patient", f"https://mrb.example/fhir/Patient/{PID}"),
            ("patient:Patient", PID),
            ("subject", f"Patient/{PID}/_history/2"),
        ],
    )
    def test_reference_forms(self, key: str, value: str) -> None:
        assert parse("Observation", (key, value)).patient == PatientSelector(person_id=PID)

    def test_by_identifier(self) -> None:
        s = parse("DiagnosticReport", ("subject:identifier", "urn:oid:2.16.156.10011.1.3|X1"))
        assert s.patient == PatientSelector(identifier=("urn:oid:2.16.156.10011.1.3", "X1"))
        p = parse("Patient", ("identifier", "urn:mrn|42"))
        assert p.patient == PatientSelector(identifier=("urn:mrn", "42"))
        assert parse("Patient", ("_id", PID)).patient == PatientSelector(person_id=PID)

    def test_an_identifier_needs_its_system(self) -> None:
        err = refused("Patient", ("identifier", "110101199003071234"))
        assert err.status == 400 and "system|value" in err.diagnostics

    def test_no_patient_is_forbidden_and_says_why(self) -> None:
        err = refused("Observation", ("code", "718-7"))
        assert err.status == 403 and err.code == "forbidden"
        assert "one named patient" in err.diagnostics
        assert refused("Patient", ("name", "张")).status == 403

    def test_two_patients_are_forbidden(self) -> None:
        assert refused("Observation", ("patient", "a,b")).status == 403
        assert refused("Observation", ("patient", "a"), ("subject", "Patient/b")).status == 403
        assert refused("Patient", ("identifier", "s|1,s|2")).status == 403

    def test_other_subjects_are_refused(self) -> None:
        assert refused("Observation", ("subject", "Group/g1")).status == 400
        assert patient_id("Patient/x") == "x"

    def test_unknown_modifiers_are_refused_even_when_lenient(self) -> None:
        assert refused("Observation", ("patient:missing", "true")).code == "not-supported"
        err = refused("Observation", ("patient", PID), ("code:text", "hemoglobin"))
        assert err.status == 400 and ":text" in err.diagnostics


class TestDates:
    def test_date_values_and_last_updated(self) -> None:
        s = parse(
            "Observation",
            ("patient", PID),
            ("date", "ge2026-05"),
            ("date", "lt2026-06,2026-08"),
            ("_lastUpdated", "gt2026-05-01T00:00:00Z"),
        )
        assert [(d.target, [v.prefix for v in d.values]) for d in s.dates] == [
            ("date", ["ge"]),
            ("date", ["lt", "eq"]),
            ("lastUpdated", ["gt"]),
        ]

    def test_imaging_uses_started(self) -> None:
        s = parse("ImagingStudy", ("patient", PID), ("started", "2026"))
        assert s.dates[0].target == "date"
        assert parse("ImagingStudy", ("patient", PID), ("date", "2026")).ignored

    def test_a_bad_date_is_a_400_naming_the_parameter(self) -> None:
        err = refused("Observation", ("patient", PID), ("date", "2026-13"))
        assert err.status == 400 and err.diagnostics.startswith("date:")
        assert refused("Observation", ("patient", PID), ("date", "zz2026")).status == 400


class TestResultParameters:
    def test_count_sort_include(self) -> None:
        s = parse(
            "DiagnosticReport",
            ("patient", PID),
            ("_count", "5"),
            ("_sort", "-date,_id"),
            ("_include", "DiagnosticReport:result"),
        )
        assert (s.count, s.sort, s.include_results) == (5, (("date", True), ("_id", False)), True)
        assert parse("Observation", ("patient", PID)).sort == (("date", True),)
        assert parse("Observation", ("patient", PID), ("_count", "10000")).count == MAX_COUNT

    def test_bad_counts(self) -> None:
        assert refused("Observation", ("patient", PID), ("_count", "ten")).status == 400
        assert refused("Observation", ("patient", PID), ("_count", "-1")).status == 400

    def test_summary_count(self) -> None:
        assert parse("Observation", ("patient", PID), ("_summary", "count")).summary_count

    def test_the_cursor_carries_only_what_was_applied(self) -> None:
        s = parse(
            "Observation",
            ("patient", PID),
            ("code", "718-7"),
            ("_count", "2"),
            ("_format", "json"),
            ("unknown", "x"),
        )
        assert s.canonical == (("code", "718-7"),)


class TestHandling:
    def test_lenient_ignores_and_reports_unknown_parameters(self) -> None:
        s = parse(
            "Observation",
            ("patient", PID),
            ("performer", "Practitioner/1"),
            ("_sort", "value-quantity"),
            ("_include", "Observation:performer"),
            ("_summary", "text"),
        )
        assert len(s.ignored) == 4
        assert any("performer" in m for m in s.ignored)

    def test_strict_refuses_them(self) -> None:
        for extra in (
            ("performer", "Practitioner/1"),
            ("_sort", "value-quantity"),
            ("_include", "Observation:performer"),
            ("_elements", "code"),
        ):
            err = refused("Observation", ("patient", PID), extra, strict=True)
            assert err.status == 400 and err.code == "not-supported"
            assert "handling=strict" in err.diagnostics

    def test_prefer_header(self) -> None:
        assert check_prefer("handling=strict")
        assert check_prefer("return=representation; handling=strict")
        assert not check_prefer("handling=lenient")
        assert not check_prefer(None)
