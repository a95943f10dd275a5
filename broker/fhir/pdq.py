"""IHE PDQm Patient Demographics Match [ITI-119]: FHIR's Patient `$match` (pure, no I/O).

`POST [base]/Patient/$match` with a Parameters resource (IHE ITI PDQm 3.x, ITI TF-2:
3.119, https://profiles.ihe.net/ITI/PDQm/ITI-119.html; FHIR R4 Patient $match,
https://hl7.org/fhir/R4/patient-operation-match.html): `resource` (the Patient to match,
1..1), `onlyCertainMatches` (boolean, 0..1) and `count` (integer, 0..1). Without those
two, the Patient itself may be the body (2:3.119.4.1.2). The answer is a searchset Bundle:
each entry's `search.score` (0..1) and the match-grade extension
(http://hl7.org/fhir/StructureDefinition/match-grade) on `entry.search`, most likely first
(Cases 1, 2, 6); with onlyCertainMatches, only `certain` matches (Cases 3-5); nobody
found is 200 with no entry (Case 7); a request mrb cannot read is 400 with an
OperationOutcome (Case 9); what mrb did not use is a warning OperationOutcome entry
(Case 10).

mrb matches on identifiers only: each identifier of the Patient, normalised as the
client's hospital sends it (`broker.domain.identifiers.normalise`), finds the person it
is linked to, exactly as ingest linked it. People's demographics are not stored in mrb's
index (the clear data lives only in the sealed payloads), so the demographic match engine
(broker/domain/matching.py) is not used and name, birth date, gender, address... are not
compared; the answer says so in a warning entry when they were sent.

Grades: one person found by every identifier that found anybody is `certain` (score 1):
an identifier link is exact. Identifiers that lead to different people contradict each
other: every one of them is only `possible`, scored by the share of the given identifiers
that lead to it, so a consumer asking onlyCertainMatches gets none (Case 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier, PatientIdentifier
from broker.fhir.errors import invalid

OPERATION = "match"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
CERTAIN, POSSIBLE = "certain", "possible"
MAX_IDENTIFIERS = 20
MAX_VALUE = 300
# Patient elements that describe the person (not identifiers): received, not compared.
DEMOGRAPHICS = (
    "name",
    "telecom",
    "gender",
    "birthDate",
    "deceasedBoolean",
    "deceasedDateTime",
    "address",
    "maritalStatus",
    "multipleBirthBoolean",
    "multipleBirthInteger",
    "contact",
    "extension",
)
NOT_COMPARED = (
    "mrb matches on identifiers only: people's demographics are not stored in its index, "
    "so these elements were not compared: "
)
NO_IDENTIFIER = (
    "the Patient has no identifier with a value: mrb matches on identifiers only, so it "
    "found nobody"
)

Resource = dict[str, Any]


@dataclass(frozen=True)
class Given:
    """One identifier of the Patient to match, and where it was in the request."""

    system: str | None
    value: str
    where: str  # FHIRPath of the identifier in the request


@dataclass(frozen=True)
class MatchRequest:
    identifiers: tuple[Given, ...]
    only_certain: bool
    count: int | None
    not_compared: tuple[str, ...]  # demographic elements given


@dataclass(frozen=True)
class Match:
    person_id: str
    score: float
    grade: str
    identifier: PatientIdentifier  # the first given identifier that found this person


def parse_match(body: object) -> MatchRequest:
    """The $match request (a Parameters resource, or a bare Patient), or a 400."""
    if not isinstance(body, dict):
        raise invalid("$match takes a Parameters resource (or a Patient) as a JSON object")
    kind = body.get("resourceType")
    if kind == "Patient":
        return _patient(body, "Patient", only_certain=False, count=None)
    if kind != "Parameters":
        raise invalid(
            f"$match takes a Parameters resource, not {str(kind)[:40]!r}: its `resource` "
            "parameter holds the Patient"
        )
    params = body.get("parameter")
    if not isinstance(params, list) or not params:
        raise invalid("Parameters.parameter must list `resource` (the Patient to match)")
    seen: dict[str, Mapping[str, Any]] = {}
    for i, p in enumerate(params):
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str):
            raise invalid(f"Parameters.parameter[{i}] has no name")
        if name not in ("resource", "onlyCertainMatches", "count"):
            raise invalid(
                f"Parameters.parameter[{i}]: $match takes resource, onlyCertainMatches and "
                f"count, not {name[:40]!r}"
            )
        if name in seen:
            raise invalid(f"Parameters.parameter[{i}]: {name} is given more than once")
        seen[name] = p
    only_certain = False
    if "onlyCertainMatches" in seen:
        flag = seen["onlyCertainMatches"].get("valueBoolean")
        if not isinstance(flag, bool):
            raise invalid("onlyCertainMatches needs valueBoolean true or false")
        only_certain = flag
    count: int | None = None
    if "count" in seen:
        n = seen["count"].get("valueInteger")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise invalid("count needs valueInteger of 1 or more")
        count = n
    if "resource" not in seen:
        raise invalid("Parameters has no `resource` parameter: the Patient to match")
    patient = seen["resource"].get("resource")
    where = f"Parameters.parameter[{params.index(seen['resource'])}].resource"
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        raise invalid(f"{where} must be a Patient resource")
    return _patient(patient, where, only_certain=only_certain, count=count)


def normalised(
    request: MatchRequest, *, hospital: str, registry: IdentifierRegistry
) -> list[PatientIdentifier]:
    """The given identifiers as the client's hospital sends them; a 400 naming the one a
    known system's rules refuse (a resident ID with a wrong check digit)."""
    out: list[PatientIdentifier] = []
    for given in request.identifiers:
        try:
            found = registry.lookup(given.system, given.value, hospital=hospital)
        except InvalidIdentifier as exc:
            raise invalid(f"{given.where} is not a valid identifier: {exc}") from None
        if found is not None and found not in out:
            out.append(found)
    return out


def grade(found: Sequence[tuple[PatientIdentifier, str | None]]) -> list[Match]:
    """The people the identifiers lead to, most likely first (module docstring)."""
    given = len(found)
    people: dict[str, list[PatientIdentifier]] = {}
    for ident, person in found:
        if person is not None:
            people.setdefault(person, []).append(ident)
    if len(people) == 1:
        ((person, idents),) = people.items()
        return [Match(person, 1.0, CERTAIN, idents[0])]
    matches = [
        Match(person, round(len(idents) / given, 4), POSSIBLE, idents[0])
        for person, idents in people.items()
    ]
    return sorted(matches, key=lambda m: (-m.score, m.person_id))


def select(matches: list[Match], request: MatchRequest) -> list[Match]:
    """onlyCertainMatches keeps the certain ones; count keeps the first `count`."""
    kept = [m for m in matches if m.grade == CERTAIN] if request.only_certain else matches
    return kept[: request.count] if request.count is not None else kept


def search_of(match: Match) -> Resource:
    """Bundle.entry.search of a match: mode, score and the match-grade extension."""
    return {
        "extension": [{"url": MATCH_GRADE, "valueCode": match.grade}],
        "mode": "match",
        "score": match.score,
    }


def warnings(request: MatchRequest) -> list[str]:
    """What the answer did not use, for a warning OperationOutcome entry."""
    out: list[str] = []
    if not request.identifiers:
        out.append(NO_IDENTIFIER)
    if request.not_compared:
        out.append(NOT_COMPARED + ", ".join(request.not_compared))
    return out


def _patient(
    patient: Mapping[str, Any], where: str, *, only_certain: bool, count: int | None
) -> MatchRequest:
    for modifier in ("implicitRules", "modifierExtension"):
        if modifier in patient:
            # PDQm Patient Profile for $match Input: both are 0..0.
            raise invalid(f"{where}.{modifier} is not allowed in a $match input (PDQm)")
    raw = patient.get("identifier", [])
    if not isinstance(raw, list):
        raise invalid(f"{where}.identifier must be a list of Identifiers")
    if len(raw) > MAX_IDENTIFIERS:
        raise invalid(f"{where} has more than {MAX_IDENTIFIERS} identifiers")
    given: list[Given] = []
    for i, ident in enumerate(raw):
        at = f"{where}.identifier[{i}]"
        if not isinstance(ident, dict):
            raise invalid(f"{at} must be an Identifier")
        system, value = ident.get("system"), ident.get("value")
        if system is not None and not isinstance(system, str):
            raise invalid(f"{at}.system must be a string")
        if value is None:
            continue  # nothing to match on
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise invalid(f"{at}.value must be a string of at most {MAX_VALUE} characters")
        given.append(Given(system, value, at))
    demographics = tuple(k for k in DEMOGRAPHICS if patient.get(k) not in (None, [], {}, ""))
    return MatchRequest(tuple(given), only_certain, count, demographics)
