"""HL7 v2 data types to FHIR elements: coded values, numbers, units, ranges, flags.

Mapping follows the HL7 v2-to-FHIR IG data type maps (CWE -> CodeableConcept,
NM/SN -> Quantity/Range/Ratio, OBX-7 -> referenceRange, OBX-8 -> interpretation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from adapters.hl7v2.jsonout import Decimal
from adapters.hl7v2.segments import Rep, join_components, sub

Json = dict[str, Any]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# HL7 table 0396 names (CWE.3) of the code systems with a FHIR URI.
_SYSTEMS = {
    "LN": LOINC,
    "LOINC": LOINC,
    "2.16.840.1.113883.6.1": LOINC,
    LOINC: LOINC,
    "SCT": SNOMED,
    "SNOMEDCT": SNOMED,
    "SNOMED-CT": SNOMED,
    "2.16.840.1.113883.6.96": SNOMED,
    SNOMED: SNOMED,
    "UCUM": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
}
_HL7_TABLE = re.compile(r"HL7(\d{4})")

# Common lab units in exact UCUM spelling, and non-UCUM spellings LIS use for them.
_UCUM_UNITS = _words(
    "% /uL /L 10*3/uL 10*6/uL 10*9/L 10*12/L fL pg g/L g/dL mg/dL mg/L ug/L ng/mL ng/L "
    "pg/mL mmol/L umol/L nmol/L pmol/L mEq/L U/L [IU]/L m[IU]/L [IU]/mL mU/L u[IU]/mL "
    "mm/h mL/min mL/min/{1.73_m2} s min h mm[Hg] kg g mg cm mm {ratio} {cells}/uL "
    "[pH] mosm/kg g/24.h umol/L/s"
)
_UNIT_ALIASES = {
    "10^9/L": "10*9/L",
    "10E9/L": "10*9/L",
    "×10^9/L": "10*9/L",
    "10^12/L": "10*12/L",
    "10E12/L": "10*12/L",
    "×10^12/L": "10*12/L",
    "IU/L": "[IU]/L",
    "mIU/L": "m[IU]/L",
    "uIU/mL": "u[IU]/mL",
    "μmol/L": "umol/L",
    "µmol/L": "umol/L",
    "sec": "s",
}

# The codes the IG's 0078 ConceptMap maps (same code in v3). It leaves AC, HM, OBX, QCF
# and TOX unmapped, so those stay text like any other unknown flag.
_V3_INTERPRETATION = _words(
    "< > A AA B CAR D DET E EX EXP H H> HH HU HX I IE IND L L< LL LU LX MS N NCL "
    "ND NEG NR NS POS R RR S SDD SYN-R SYN-S U UNE VS W WR"
)
_INTERPRETATION_ALIASES = {"↑": "H", "↓": "L", "高": "H", "低": "L", "阳性": "POS", "阴性": "NEG"}
_INTERPRETATION_DISPLAY = {
    "N": "Normal",
    "L": "Low",
    "H": "High",
    "LL": "Critical low",
    "HH": "Critical high",
    "A": "Abnormal",
    "AA": "Critical abnormal",
    "POS": "Positive",
    "NEG": "Negative",
}

_NUMBER = re.compile(r"([+-])?(\d*)(?:\.(\d*))?")
_COMPARATOR_NUMBER = re.compile(r"(<=|>=|<|>|≤|≥)\s*(.+)")
_RANGE = re.compile(r"(-?[\d.]+)\s*(?:--?|–|~|to|TO|至)\s*(-?[\d.]+)")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "≤": "<=", "≥": ">="}


class BadValue(ValueError):
    """A value that breaks its HL7 data type (the message says which rule, never the value)."""


def number(text: str) -> Decimal:
    """An NM value as an exact FHIR decimal ("+007.50" -> 7.50)."""
    m = _NUMBER.fullmatch(text.strip())
    if m is None or not (m[2] or m[3]):
        raise BadValue("is not a number")
    whole = m[2].lstrip("0") or "0"
    literal = ("-" if m[1] == "-" else "") + whole + (f".{m[3]}" if m[3] else "")
    return Decimal(literal)


def known_system(name: str) -> str | None:
    """A CWE.3 coding system name (table 0396) as its FHIR URI, if it has one."""
    key = name.strip()
    if key in _SYSTEMS or key.upper() in _SYSTEMS:
        return _SYSTEMS.get(key, _SYSTEMS.get(key.upper()))
    table = _HL7_TABLE.fullmatch(key.upper())
    return f"http://terminology.hl7.org/CodeSystem/v2-{table[1]}" if table else None


def codeable(rep: Rep, *, local: str | None, hospital: str) -> Json | None:
    """CE/CWE/CNE -> CodeableConcept: the primary and the alternate triplet, CWE.9 as text.

    A code whose system is local (L, 99zzz, unknown or none) gets `local` when given
    (OBX-3 and OBR-4: the hospital's lab-code system, mapped by the catalog); otherwise
    a named local system becomes urn:mrb:hospital:<H>:code:<name> and an unnamed one
    stays without a system.
    """
    codings: list[Json] = []
    for first in (1, 4):
        code = " ".join(sub(rep, first).split())
        if not code:
            continue
        display, name = sub(rep, first + 1), sub(rep, first + 2)
        system = known_system(name) if name else None
        if system is None:
            if local is not None:
                system = local
            elif name:
                system = f"urn:mrb:hospital:{hospital}:code:{quote(name, safe='')}"
        coding: Json = {"system": system} if system else {}
        coding["code"] = code
        if display:
            coding["display"] = display
        if coding not in codings:
            codings.append(coding)
    text = sub(rep, 9)  # CWE.9 original text
    if not text and len(codings) == 1 and set(codings[0]) == {"code"}:
        text = codings[0]["code"]  # a bare code ("M415"): its only readable form
    if not text and not codings:
        text = sub(rep, 2) or sub(rep, 5)  # "^阴性": a display without a code
    if not codings and not text:
        return None
    concept: Json = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept


def table_codeable(
    rep: Rep, system: str, table: Mapping[str, str], *, hospital: str
) -> Json | None:
    """A CWE drawn from an HL7 table (SPM-21: 0490, SPM-24: 0493) -> CodeableConcept.

    A code the table holds, sent without a coding system (LIS often leave CWE.3 empty)
    or under the table's own name (HL7nnnn), gets the table's system, its upper-case
    code and, when the sender gave none, the table's display; the sender's display and
    CWE.9 text are kept. Any other code keeps whatever `codeable` made of it.
    """
    concept = codeable(rep, local=None, hospital=hospital)
    if concept is None:
        return None
    codings: list[Json] = []
    resolved: set[str] = set()
    for coding in concept.get("coding", []):
        code = str(coding["code"])
        if coding.get("system") in (None, system) and code.upper() in table:
            resolved.add(code)
            code = code.upper()
            coding = {
                "system": system,
                "code": code,
                "display": coding.get("display") or table[code],
            }
        if coding not in codings:
            codings.append(coding)
    if codings:
        concept["coding"] = codings
    if not sub(rep, 9) and concept.get("text") in resolved:
        del concept["text"]  # only the bare code repeated: the coding now says it better
    return concept


def quantity(value: Decimal, unit_rep: Rep) -> Json:
    """Quantity with OBX-6: UCUM system and code only when the unit is a UCUM code."""
    q: Json = {"value": value}
    code, text, system = sub(unit_rep, 1), sub(unit_rep, 2), sub(unit_rep, 3).upper()
    ucum = code if system == "UCUM" else None
    if ucum is None and not system and code:
        candidate = _UNIT_ALIASES.get(code, code)
        ucum = candidate if candidate in _UCUM_UNITS else None
    if code or text:
        q["unit"] = text or code
    if ucum:
        q["system"] = UCUM
        q["code"] = ucum
    return q


def numeric_value(text: str, unit_rep: Rep) -> Json:
    """NM: a number, tolerating a leading comparator ("<5") as LIS often send it."""
    m = _COMPARATOR_NUMBER.fullmatch(text.strip())
    if m:
        q = quantity(number(m[2]), unit_rep)
        q["comparator"] = _COMPARATORS[m[1]]
        return {"valueQuantity": q}
    return {"valueQuantity": quantity(number(text), unit_rep)}


def structured_numeric(rep: Rep, unit_rep: Rep) -> Json:
    """SN (comparator ^ num1 ^ separator/suffix ^ num2) -> Quantity, Range, Ratio or text."""
    comparator, num1, separator, num2 = (sub(rep, i) for i in (1, 2, 3, 4))
    if not num1 and not num2:
        return {}
    if comparator in ("", "=") and separator == "-" and num1 and num2:
        return {
            "valueRange": {
                "low": quantity(number(num1), unit_rep),
                "high": quantity(number(num2), unit_rep),
            }
        }
    if comparator in ("", "=") and separator in (":", "/") and num1 and num2:
        return {
            "valueRatio": {
                "numerator": {"value": number(num1)},
                "denominator": {"value": number(num2)},
            }
        }
    if not separator and not num2 and comparator in ("", "=", *_COMPARATORS):
        q = quantity(number(num1), unit_rep)
        if comparator in _COMPARATORS:
            q["comparator"] = _COMPARATORS[comparator]
        return {"valueQuantity": q}
    return {"valueString": "".join((comparator, num1, separator, num2))}


def guessed_value(reps: list[Rep], unit_rep: Rep) -> Json:
    """A value whose OBX-2 is empty or not a v2 type: SN if shaped so, NM if a number."""
    rep = reps[0]
    if len(rep) > 1:
        try:
            found = structured_numeric(rep, unit_rep)
        except BadValue:
            found = {}
        if found and "valueString" not in found:
            return found
    if len(rep) == 1:
        try:
            return numeric_value(sub(rep, 1), unit_rep)
        except BadValue:
            pass
    return {"valueString": text_of(reps)}


def reference_range(text: str, unit_rep: Rep) -> Json | None:
    """OBX-7: "3.5-5.0", "4.3 to 6.2", "<5", ">1" give low/high; the text is always kept."""
    text = text.strip()
    if not text:
        return None
    out: Json = {}
    try:
        if m := _RANGE.fullmatch(text):
            out["low"] = quantity(number(m[1]), unit_rep)
            out["high"] = quantity(number(m[2]), unit_rep)
        elif m := _COMPARATOR_NUMBER.fullmatch(text):
            side = "high" if m[1] in ("<", "<=", "≤") else "low"
            out[side] = quantity(number(m[2]), unit_rep)
    except BadValue:
        out = {}
    for q in (out.get("low"), out.get("high")):
        if q is not None:  # SimpleQuantity: no comparator
            q.pop("comparator", None)
    out["text"] = text
    return out


def interpretations(reps: list[Rep]) -> list[Json]:
    """OBX-8 abnormal flags (table 0078) -> v3 ObservationInterpretation."""
    out: list[Json] = []
    for rep in reps:
        code = sub(rep, 1)
        code = _INTERPRETATION_ALIASES.get(code, code)
        if not code:
            continue
        if code in _V3_INTERPRETATION:
            coding: Json = {"system": INTERPRETATION, "code": code}
            if code in _INTERPRETATION_DISPLAY:
                coding["display"] = _INTERPRETATION_DISPLAY[code]
            concept: Json = {"coding": [coding]}
        else:
            concept = {"text": code}
        if concept not in out:
            out.append(concept)
    return out


def text_of(reps: list[Rep], sep: str = "\n") -> str:
    """Free text (ST/TX/FT): repetitions are lines; components joined back with '^'."""
    return sep.join(t for t in (join_components(r) for r in reps) if t)
