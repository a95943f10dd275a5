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

Two ways to find people, combined (2:3.119.4.1.3 Expected Actions leaves the algorithm to
the Supplier):

- identifiers: each identifier of the Patient, normalised as the client's hospital sends
  it (`broker.domain.identifiers.normalise`), finds the person it is linked to, exactly as
  ingest linked it. One person found by every identifier that found anybody is `certain`
  (score 1); identifiers leading to different people contradict each other: each of them
  is only `possible`, scored by the share of the given identifiers leading to it.
- demographics (name, birthDate, gender, telecom, address; read as ingest reads a Patient):
  the request's blocking keys (broker.domain.matching.blocking_keys) find the people
  whose stored records share a block (blocks above max_block_size skipped, as at
  ingest); each of their records is scored by the engine (broker.domain.matching.compare,
  schemas/identity/matching.yaml), the request's national identifiers taking part in the
  hard rules; a person's best record counts. NO_MATCH is not returned.

Grades (match-grade value set: certain | probable | possible | certainly-not) and scores:

- `certain`: an identifier match (score 1.0), or an engine MATCH (score 0.90-0.99);
- `probable`: an engine POSSIBLE_MATCH whose weight reached the match threshold but a hard
  rule capped it (no contact detail agrees, twins, ...): 0.70-0.89;
- `possible`: an engine POSSIBLE_MATCH below the match threshold (0.50-0.69), or
  contradicting identifiers (the share of the given identifiers leading to them);
- `certainly-not` is never returned (NO_MATCH people are left out).

Within a band the score grows linearly with the engine's total weight W (log2 m/u summed),
measured in steps of the gap G between the two thresholds: MATCH 0.90 + 0.09·min(1, (W -
match)/G), probable 0.70 + 0.19·min(1, (W - match)/G), possible 0.50 + 0.19·(W -
possible)/G; rounded to 4 places. An identifier match wins over the demographics for the
same person (the better grade, then the better score, is kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from broker.domain.demographics import Demographics, of_fhir_patient
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import IdentifierScope, InvalidIdentifier, PatientIdentifier
from broker.fhir.errors import invalid
from broker.fhir.resources import ResultView, instant, patient_identifiers

if TYPE_CHECKING:  # pypinyin's dictionaries load only when matching is first used
    from broker.domain.matching import MatchingRules, MatchResult

OPERATION = "match"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
CERTAIN, PROBABLE, POSSIBLE = "certain", "probable", "possible"
GRADE_RANK = {CERTAIN: 3, PROBABLE: 2, POSSIBLE: 1}
MAX_IDENTIFIERS = 20
MAX_VALUE = 300
DEFAULT_COUNT, MAX_COUNT = 10, 10  # $match answers at most this many people
# Patient elements the engine compares (read as ingest reads a Patient).
COMPARED = ("name", "telecom", "gender", "birthDate", "address")
# Patient elements that describe the person but are not compared.
DEMOGRAPHICS = (
    "deceasedBoolean",
    "deceasedDateTime",
    "maritalStatus",
    "multipleBirthBoolean",
    "multipleBirthInteger",
    "contact",
    "extension",
)
NOT_COMPARED = "mrb's matching engine does not compare these elements: "
NOTHING_TO_MATCH = (
    "the Patient has no identifier with a value and no name, birth date, telecom or address "
    "mrb can block on: it found nobody"
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
    not_compared: tuple[str, ...]  # demographic elements given that are not compared
    demographics: Demographics | None = None  # what the engine compares, if anything


@dataclass(frozen=True)
class Match:
    person_id: str
    score: float
    grade: str
    identifier: PatientIdentifier | None  # the first given identifier that found them
    by: str = "identifier"  # or "demographics"
    decision: str | None = None  # the engine's decision (demographics)


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
    return _ordered(matches)


# -- demographics (broker.domain.matching) ----------------------------------------------


def probe(request: MatchRequest, given: Sequence[PatientIdentifier]) -> Demographics | None:
    """The record the engine compares: the request's demographics with its national
    identifiers (they take part in the hard rules, as at ingest); None when none given."""
    d = request.demographics
    if d is None:
        return None
    national = tuple((i.system, i.value) for i in given if i.scope is IdentifierScope.NATIONAL)
    return Demographics(
        family=d.family,
        given=d.given,
        full_name=d.full_name,
        sex=d.sex,
        birth_date=d.birth_date,
        phone=d.phone,
        address=d.address,
        identifiers=national,
    )


def blocking_keys(record: Demographics | None, rules: MatchingRules) -> frozenset[str]:
    """The blocks (in clear) the record falls in: where its candidates are."""
    if record is None:
        return frozenset()
    from broker.domain import matching

    return matching.blocking_keys(matching.prepare(record, rules), rules.blocking)


def score_of(result: MatchResult, rules: MatchingRules) -> tuple[str, float] | None:
    """The engine's decision as a match grade and a 0..1 score (module docstring); None
    for NO_MATCH."""
    from broker.domain.matching import Decision

    top, low = rules.match_threshold, rules.possible_threshold
    gap = max(top - low, 1e-9)
    above = min(1.0, max(0.0, (result.total - top) / gap))
    if result.decision is Decision.MATCH:
        return CERTAIN, round(0.90 + 0.09 * above, 4)
    if result.decision is not Decision.POSSIBLE_MATCH:
        return None
    if result.total >= top:
        return PROBABLE, round(0.70 + 0.19 * above, 4)
    between = min(1.0, max(0.0, (result.total - low) / gap))
    return POSSIBLE, round(0.50 + 0.19 * between, 4)


def score_people(
    record: Demographics,
    people: Mapping[str, Sequence[tuple[str, Demographics]]],
    rules: MatchingRules,
) -> list[Match]:
    """Each person's best record against `record`, NO_MATCH left out, best first."""
    from broker.domain import matching

    mine = matching.prepare(record, rules)
    out: list[Match] = []
    for person_id, records in people.items():
        best: Match | None = None
        for _, theirs in records:
            result = matching.compare(mine, matching.prepare(theirs, rules), rules)
            graded = score_of(result, rules)
            if graded is None:
                continue
            m = Match(person_id, graded[1], graded[0], None, "demographics", result.decision)
            if best is None or _key(m) < _key(best):
                best = m
        if best is not None:
            out.append(best)
    return _ordered(out)


def combine(by_identifier: Iterable[Match], by_demographics: Iterable[Match]) -> list[Match]:
    """One match per person, the better grade then score kept (an identifier's certain
    match is 1.0: it wins), most likely first."""
    best: dict[str, Match] = {}
    for m in (*by_identifier, *by_demographics):
        if m.person_id not in best or _key(m) < _key(best[m.person_id]):
            best[m.person_id] = m
    return _ordered(best.values())


def select(matches: list[Match], request: MatchRequest) -> list[Match]:
    """onlyCertainMatches keeps the certain ones; count (default and at most MAX_COUNT)
    keeps the first `count`."""
    kept = [m for m in matches if m.grade == CERTAIN] if request.only_certain else matches
    return kept[: min(request.count or DEFAULT_COUNT, MAX_COUNT)]


def search_of(match: Match) -> Resource:
    """Bundle.entry.search of a match: mode, score and the match-grade extension."""
    return {
        "extension": [{"url": MATCH_GRADE, "valueCode": match.grade}],
        "mode": "match",
        "score": match.score,
    }


def warnings(request: MatchRequest, *, blocked: bool = True) -> list[str]:
    """What the answer did not use, for a warning OperationOutcome entry. `blocked`:
    whether the demographics gave any block to look in."""
    out: list[str] = []
    if not request.identifiers and (request.demographics is None or not blocked):
        out.append(NOTHING_TO_MATCH)
    if request.not_compared:
        out.append(NOT_COMPARED + ", ".join(request.not_compared))
    return out


def _key(m: Match) -> tuple[int, float, int, str]:
    return (-GRADE_RANK[m.grade], -m.score, m.by != "identifier", m.person_id)


def _ordered(matches: Iterable[Match]) -> list[Match]:
    return sorted(matches, key=_key)


# -- reading a Patient (as ingest reads one) --------------------------------------------


def demographics_of(patient: Mapping[str, Any]) -> Demographics | None:
    """What the engine compares, read from the Patient as ingest reads one
    (broker.domain.demographics.of_fhir_patient), so like is compared with like. None
    when nothing but gender and birth date is given (ingest stores no record then)."""
    return of_fhir_patient(patient, birth_date(patient.get("birthDate")))


def birth_date(value: object) -> date | None:
    """A full birth date (YYYY-MM-DD); a year or year-month is not compared."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


# -- what a machine client is shown (ITI-78 and ITI-119) --------------------------------


def patient_for(views: Sequence[ResultView], person_id: str, *, hospital: str) -> Resource:
    """The Patient a registered client of `hospital` receives (PIPL minimum necessary: the
    client already names the person; it learns nothing another hospital wrote of them but
    the linking facts).

    - identifiers: national ones and its own hospital's (broker.fhir.visibility);
    - its own hospital's Patient as that hospital last sent it (name, telecom, address...):
      what the client's own hospital already holds;
    - otherwise only gender and birthDate (the newest payload's), which the client needs to
      check the match; never another hospital's name, telecom or address."""
    identifiers = patient_identifiers(list(views), viewer=hospital)
    own = next((v for v in views if v.info.hospital == hospital), None)
    if own is not None:
        resource = own.patient_resource(viewer=hospital)
        resource.pop("identifier", None)
    else:
        resource = {"resourceType": "Patient"}
        for view in views:
            theirs = view.patient_resource(viewer=hospital)
            for element in ("gender", "birthDate"):
                if element not in resource and isinstance(theirs.get(element), str):
                    resource[element] = theirs[element]
        newest = views[0].info.updated_at if views else None
        if newest is not None:
            resource["meta"] = {"lastUpdated": instant(newest)}
    if identifiers:
        resource["identifier"] = identifiers
    resource["id"] = person_id
    return resource


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
    for element in COMPARED:
        kind = str if element in ("gender", "birthDate") else list
        if patient.get(element) is not None and not isinstance(patient[element], kind):
            raise invalid(f"{where}.{element} must be a {'string' if kind is str else 'list'}")
    not_compared = tuple(k for k in DEMOGRAPHICS if patient.get(k) not in (None, [], {}, ""))
    return MatchRequest(tuple(given), only_certain, count, not_compared, demographics_of(patient))
