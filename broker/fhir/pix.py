"""IHE PIXm: Mobile Patient Identifier Cross-reference Query [ITI-83] (pure, no I/O).

`GET [base]/Patient/$ihe-pix?sourceIdentifier=system|value{&targetSystem=uri}{&_format=}`
(IHE ITI PIXm 3.0, ITI TF-2: 3.83, https://profiles.ihe.net/ITI/PIXm/ITI-83.html), with
mrb as the Patient Identifier Cross-reference Manager. The answers follow 2:3.83.4.2.2:

- Success (2:3.83.4.2.2.1): 200, a Parameters resource with one `targetIdentifier`
  (valueIdentifier) per identifier of the person the client may see, "the identifier
  value given in the sourceIdentifier parameter ... shall not be included", and one
  `targetId` (valueReference) naming the Patient: `Patient/<mrb person id>`.
- Source Identifier not found (2:3.83.4.2.2.2): 404, OperationOutcome issue severity
  error, code `not-found`, diagnostics "sourceIdentifier Patient Identifier not found".
- Source Domain not recognized (2:3.83.4.2.2.3): 400, code `code-invalid`, diagnostics
  "sourceIdentifier Assigning Authority not found".
- Target Domain not recognized (2:3.83.4.2.2.4): 403, code `code-invalid`, diagnostics
  "targetSystem not found".

What mrb recognises as a domain: mrb keeps identifiers only as keyed pseudonyms, so it
holds no list of the systems each hospital uses. A source system is read as
`broker.domain.identifiers.normalise` reads it for the client's hospital: a national
system, or any other system as one of the client hospital's own (an unknown local system
finds nobody: 404). A source without a system (`|value`, `value`) names no domain: 400. A
targetSystem is recognised when it is a national system or the system of an identifier of
the person the client may see (broker.fhir.visibility); anything else, another hospital's
MRN system included, is "targetSystem not found" (403).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import IdentifierScope, InvalidIdentifier, PatientIdentifier, nfkc
from broker.fhir.errors import code_invalid, invalid, not_found, unknown_target
from broker.fhir.visibility import normalised

OPERATION = "ihe-pix"
PARAMETERS = ("sourceIdentifier", "targetSystem", "_format")
SOURCE_NOT_FOUND = "sourceIdentifier Patient Identifier not found"
SOURCE_DOMAIN_UNKNOWN = "sourceIdentifier Assigning Authority not found"
TARGET_UNKNOWN = "targetSystem not found"
PROFILE_OUT = "https://profiles.ihe.net/ITI/PIXm/StructureDefinition/IHE.PIXm.Query.Parameters.Out"
_MAX = 300  # characters of a system or value: longer is not an identifier

Resource = dict[str, Any]


@dataclass(frozen=True)
class PixQuery:
    system: str
    value: str
    targets: tuple[str, ...]  # empty: every domain


def parse_query(pairs: Sequence[tuple[str, str]]) -> PixQuery:
    """The query's parameters (2:3.83.4.1.2), or a 400 saying what is wrong."""
    sources = [v for k, v in pairs if k == "sourceIdentifier"]
    if len(sources) != 1:
        raise invalid(
            f"$ihe-pix takes exactly one sourceIdentifier (system|value); got {len(sources)}"
        )
    system, bar, value = sources[0].partition("|")
    if not bar or not system.strip():
        raise code_invalid(SOURCE_DOMAIN_UNKNOWN)
    if not value.strip():
        raise invalid("sourceIdentifier has no value after its system: use system|value")
    if len(system) > _MAX or len(value) > _MAX:
        raise invalid(f"sourceIdentifier is longer than {_MAX} characters a part")
    targets: list[str] = []
    for raw in (v for k, v in pairs if k == "targetSystem"):
        for target in raw.split(","):
            if not target.strip() or len(target) > _MAX:
                raise invalid("targetSystem must name a system (a URI of at most 300 characters)")
            targets.append(target.strip())
    return PixQuery(system.strip(), value.strip(), tuple(dict.fromkeys(targets)))


def source_identifier(
    query: PixQuery, *, hospital: str, registry: IdentifierRegistry
) -> PatientIdentifier:
    """The source identifier as the client's hospital sends it, normalised and scoped as
    ingest links it (broker.domain.identifier_systems)."""
    try:
        ident = registry.lookup(query.system, query.value, hospital=hospital)
    except InvalidIdentifier as exc:
        raise invalid(f"sourceIdentifier is not valid: {exc}") from None
    if ident is None:
        raise invalid("sourceIdentifier has no value after its system: use system|value")
    return ident


def source_not_found() -> Exception:
    return not_found(SOURCE_NOT_FOUND)


def answer(
    query: PixQuery,
    source: PatientIdentifier,
    identifiers: Sequence[Mapping[str, Any]],
    *,
    person_id: str,
    hospital: str,
    registry: IdentifierRegistry,
) -> Resource:
    """The Parameters for a person found, from the identifiers the client may see; raises
    403 "targetSystem not found" when a targetSystem is not recognised."""
    usable = [i for i in identifiers if _usable(i)]
    unknown = [
        t
        for t in query.targets
        if not _national(t, hospital, registry)
        and not any(_in(t, i, hospital, registry) for i in usable)
    ]
    if unknown:
        raise unknown_target(TARGET_UNKNOWN)
    params: list[Resource] = []
    for ident in usable:
        found = normalised(ident, hospital=hospital)
        if found is None or found.link_key == source.link_key:
            continue  # 2:3.83.4.2.2.1: the source identifier is not returned
        if query.targets and not any(_in(t, ident, hospital, registry) for t in query.targets):
            continue
        params.append({"name": "targetIdentifier", "valueIdentifier": _identifier(ident)})
    params.append({"name": "targetId", "valueReference": {"reference": f"Patient/{person_id}"}})
    return {"resourceType": "Parameters", "meta": {"profile": [PROFILE_OUT]}, "parameter": params}


def _usable(ident: Mapping[str, Any]) -> bool:
    """targetIdentifier needs system and value (IHE.PIXm.Query.Parameters.Out: 1..1 each)."""
    system, value = ident.get("system"), ident.get("value")
    return isinstance(system, str) and bool(system) and isinstance(value, str) and bool(value)


def _identifier(ident: Mapping[str, Any]) -> Resource:
    """The Identifier as its hospital sent it: use, type, system, value, assigner."""
    keep = ("use", "type", "system", "value", "assigner")
    return {k: ident[k] for k in keep if k in ident}


def _national(target: str, hospital: str, registry: IdentifierRegistry) -> bool:
    """A national system however it is spelled (the registry's aliases)."""
    known = registry.system_for(nfkc(target).strip(), hospital=hospital)
    return known is not None and known.scope is IdentifierScope.NATIONAL


def _in(target: str, ident: Mapping[str, Any], hospital: str, registry: IdentifierRegistry) -> bool:
    """Is `ident` in the domain `target` names? Both normalise to one system (so every
    alias of a system names its domain)."""
    found = normalised(ident, hospital=hospital)
    if found is None:
        return False
    try:
        asked = registry.normalise(target, found.value, hospital=hospital)
    except InvalidIdentifier:
        return False
    return asked is not None and asked.system == found.system
