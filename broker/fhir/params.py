"""Which search parameters mrb offers, and reading a query into a `Search`.

FHIR R4 search (http.html#search, search.html): repeated parameters are ANDed, the
comma-separated values of one parameter ORed; `\\,` `\\|` `\\$` `\\\\` escape. Unknown
parameters are ignored (reported in the Bundle) unless the client asks
`Prefer: handling=strict`; an unknown *modifier* on a known parameter is always an
error, since ignoring it would change what the search means. A doctor reads one named
patient at a time, so every search names exactly one patient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Literal

from broker.fhir.dates import DateError, DateValue, parse_value
from broker.fhir.errors import forbidden, invalid, not_supported

ParamType = Literal["token", "date", "reference"]
SP = "http://hl7.org/fhir/SearchParameter/"
DEFAULT_COUNT = 20
MAX_COUNT = 100
INCLUDE_RESULT = "DiagnosticReport:result"
INCLUDE_ENDPOINT = "ImagingStudy:endpoint"
# What each _include follows: the element holding the references, and the target type.
INCLUDE_PATHS: dict[str, tuple[str, str]] = {
    INCLUDE_RESULT: ("result", "Observation"),
    INCLUDE_ENDPOINT: ("endpoint", "Endpoint"),
}
# Types served by id only (no search): a study's Endpoint (broker.ingest.imaging_endpoints).
READ_ONLY_TYPES = ("Endpoint",)
WITHDRAWN = "entered-in-error"  # left out of searches unless `status` asks for it


@dataclass(frozen=True)
class Param:
    """One search parameter: its name and type, what it searches, and its definition."""

    name: str
    type: ParamType
    target: str  # "patient", "status", "date", "lastUpdated", "_id" or a token index key
    definition: str
    documentation: str


def _patient(rtype: str) -> tuple[Param, Param]:
    return (
        Param(
            "patient",
            "reference",
            "patient",
            SP + "clinical-patient",
            "The patient: `Patient/<mrb person id>` or the id alone; `patient:identifier="
            "system|value` names the patient by an identifier. Required (one patient).",
        ),
        Param(
            "subject",
            "reference",
            "patient",
            SP + f"{rtype}-subject",
            "Same as `patient` (only Patient subjects); `subject:identifier=system|value`.",
        ),
    )


def _last_updated() -> Param:
    return Param(
        "_lastUpdated",
        "date",
        "lastUpdated",
        SP + "Resource-lastUpdated",
        "When mrb indexed the current version (meta.lastUpdated); all date prefixes.",
    )


def _identifier() -> Param:
    return Param(
        "identifier",
        "token",
        "identifier",
        SP + "clinical-identifier",
        "A business identifier: `system|value`, `value`, `|value` or `system|`.",
    )


def _clinical(rtype: str) -> tuple[Param, ...]:
    return (
        *_patient(rtype),
        Param(
            "code",
            "token",
            "code",
            SP + "clinical-code",
            "The code: `system|code` (e.g. http://loinc.org|718-7), `code`, `|code`, `system|`.",
        ),
        Param(
            "date",
            "date",
            "date",
            SP + "clinical-date",
            "effective[x] as a range (a partial date or a Period is a range); prefixes eq ne "
            "lt gt le ge sa eb ap; a value without a zone is in the server's zone.",
        ),
        Param(
            "status",
            "token",
            "status",
            SP + f"{rtype}-status",
            "The status code. Without it, entered-in-error resources are left out.",
        ),
        Param(
            "category",
            "token",
            "category",
            SP + f"{rtype}-category",
            "A category coding, e.g. http://terminology.hl7.org/CodeSystem/v2-0074|LAB.",
        ),
        _identifier(),
        _last_updated(),
    )


PARAMS: dict[str, tuple[Param, ...]] = {
    "Patient": (
        Param(
            "identifier",
            "token",
            "identifier",
            SP + "Patient-identifier",
            "A patient identifier as `system|value` (e.g. urn:oid:2.16.156.10011.1.3|<resident "
            "ID>); a hospital-local identifier is read as the caller's hospital's. Required "
            "unless `_id` is given.",
        ),
        Param("_id", "token", "_id", SP + "Resource-id", "The mrb person id."),
    ),
    "DiagnosticReport": _clinical("DiagnosticReport"),
    "Observation": _clinical("Observation"),
    "ImagingStudy": (
        *_patient("ImagingStudy"),
        _identifier(),
        Param(
            "modality",
            "token",
            "modality",
            SP + "ImagingStudy-modality",
            "A series modality, e.g. http://dicom.nema.org/resources/ontology/DCM|CT or CT.",
        ),
        Param(
            "bodysite",
            "token",
            "bodysite",
            SP + "ImagingStudy-bodysite",
            "A series body site, e.g. http://snomed.info/sct|51185008.",
        ),
        Param(
            "started",
            "date",
            "date",
            SP + "ImagingStudy-started",
            "When the study started, as a range; prefixes eq ne lt gt le ge sa eb ap.",
        ),
        Param(
            "status",
            "token",
            "status",
            SP + "ImagingStudy-status",
            "The status code. Without it, entered-in-error studies are left out.",
        ),
        _last_updated(),
    ),
}

SORTS: dict[str, tuple[str, ...]] = {
    "Patient": (),
    "DiagnosticReport": ("date", "_lastUpdated", "_id"),
    "Observation": ("date", "_lastUpdated", "_id"),
    "ImagingStudy": ("started", "_lastUpdated", "_id"),
}
INCLUDES: dict[str, tuple[str, ...]] = {
    "DiagnosticReport": (INCLUDE_RESULT,),
    "ImagingStudy": (INCLUDE_ENDPOINT,),
}

# Result parameters understood for every type (and the ones accepted as no-ops).
_CONTROL = frozenset({"_count", "_sort", "_include", "_summary", "_total", "_format", "_pretty"})


@dataclass(frozen=True)
class Token:
    """A token value: `system` None means any system, "" none; `code` None any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True)
class TokenFilter:
    """One token parameter occurrence: the resource matches any of `tokens`."""

    target: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class DateFilter:
    """One date parameter occurrence: the resource matches any of `values`."""

    target: str  # "date" or "lastUpdated"
    values: tuple[DateValue, ...]


@dataclass(frozen=True)
class PatientSelector:
    """The one patient a search is about: an mrb person id, or an identifier."""

    person_id: str | None = None
    identifier: tuple[str, str] | None = None  # (system, value)


@dataclass(frozen=True)
class Search:
    resource_type: str
    patient: PatientSelector
    tokens: tuple[TokenFilter, ...] = ()
    dates: tuple[DateFilter, ...] = ()
    sort: tuple[tuple[str, bool], ...] = (("date", True),)  # (key, descending)
    count: int = DEFAULT_COUNT
    include_results: bool = False
    summary_count: bool = False
    ignored: tuple[str, ...] = ()  # what lenient handling left out, for the Bundle
    # The applied non-patient parameters, as sent: what a paging cursor carries.
    canonical: tuple[tuple[str, str], ...] = field(default=())

    @property
    def status_given(self) -> bool:
        return any(f.target == "status" for f in self.tokens)


def parse_search(
    resource_type: str,
    pairs: Iterable[tuple[str, str]],
    *,
    strict: bool,
    zone: tzinfo,
    now: datetime,
) -> Search:
    """Read a query; raises Invalid, or NotAllowed when it is not about one patient."""
    known = {p.name: p for p in PARAMS[resource_type]}
    patients: list[PatientSelector] = []
    tokens: list[TokenFilter] = []
    dates: list[DateFilter] = []
    canonical: list[tuple[str, str]] = []
    ignored: list[str] = []
    sort: tuple[tuple[str, bool], ...] | None = None
    count = DEFAULT_COUNT
    include = False
    summary_count = False

    def skip(what: str) -> None:
        if strict:
            raise not_supported(f"{what} (Prefer: handling=strict)")
        ignored.append(what)

    for key, raw in pairs:
        name, _, modifier = key.partition(":")
        value = raw.strip()
        if name in _CONTROL:
            if name == "_count":
                count = parse_count(value)
            elif name == "_sort":
                sort, unknown = _sort(resource_type, value)
                for u in unknown:
                    skip(f"sort key {u!r} is not supported for {resource_type}")
                canonical.append((key, raw))
            elif name == "_include":
                for offered in INCLUDES.get(resource_type, ()):  # the target type is implied
                    value = value.removesuffix(":" + INCLUDE_PATHS[offered][1])
                if modifier or value not in INCLUDES.get(resource_type, ()):
                    skip(f"_include{':' + modifier if modifier else ''}={value} is not supported")
                else:
                    include = True
                    canonical.append((key, raw))
            elif name == "_summary":
                if value == "count":
                    summary_count = True
                    canonical.append((key, raw))
                elif value != "false":
                    skip(f"_summary={value} is not supported (only count and false)")
            continue  # _total (always accurate), _format, _pretty: nothing to do
        param = known.get(name)
        if param is None:
            skip(f"parameter {name!r} is not supported for {resource_type}")
            continue
        if not value:
            continue  # an empty parameter is ignored (search.html)
        if param.target == "patient" or param.target == "_id":
            patients.append(_patient_selector(param, modifier, value, resource_type))
            continue
        if modifier:
            raise not_supported(f"modifier :{modifier} is not supported on {name}")
        if param.type == "token" and param.target == "identifier" and resource_type == "Patient":
            patients.append(PatientSelector(identifier=_identifier_value(value, name)))
            continue
        if param.type == "token":
            tokens.append(TokenFilter(param.target, tuple(_token(v) for v in split_values(value))))
        else:
            try:
                values = tuple(parse_value(v, zone, now) for v in split_values(value))
            except DateError as exc:
                raise invalid(f"{name}: {exc}") from None
            dates.append(DateFilter(param.target, values))
        canonical.append((key, raw))

    if not patients:
        raise forbidden(
            f"every {resource_type} search must name one patient ("
            + _how_to_name(resource_type)
            + "): a doctor reads one named patient at a time, and every read is audited"
        )
    if len(patients) > 1:
        raise forbidden(
            "a search may name only one patient (a doctor reads one named patient at a time)"
        )
    default_sort = (SORTS[resource_type][0], True) if SORTS[resource_type] else ("_id", False)
    return Search(
        resource_type=resource_type,
        patient=patients[0],
        tokens=tuple(tokens),
        dates=tuple(dates),
        sort=sort if sort else (default_sort,),
        count=count,
        include_results=include,
        summary_count=summary_count,
        ignored=tuple(ignored),
        canonical=tuple(canonical),
    )


def split_values(value: str) -> list[str]:
    """The comma-separated values of one parameter, with escapes left for `unescape`."""
    return [v for v in _split(value, ",") if v != ""]


def unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_token(value: str) -> Token:
    """`code`, `system|code`, `|code` (no system) or `system|` (any code of the system)."""
    return _token(value)


def _token(value: str) -> Token:
    parts = _split(value, "|")
    if len(parts) == 1:
        return Token(None, unescape(parts[0]))
    if len(parts) > 2:
        raise invalid(f"token {value[:60]!r} has more than one unescaped '|'")
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise invalid("token '|' names neither a system nor a code")
    return Token(system, code or None)


def _split(text: str, sep: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _identifier_value(value: str, name: str) -> tuple[str, str]:
    values = split_values(value)
    if len(values) != 1:
        raise forbidden(f"{name} must name one patient (a doctor reads one patient at a time)")
    token = _token(values[0])
    if not token.system or not token.code:
        raise invalid(
            f"{name} must be `system|value`, e.g. urn:oid:2.16.156.10011.1.3|<resident ID>: "
            "the system says whose identifier it is"
        )
    return token.system, token.code


def _patient_selector(param: Param, modifier: str, value: str, rtype: str) -> PatientSelector:
    if param.target == "_id":
        if modifier:
            raise not_supported(f"modifier :{modifier} is not supported on _id")
        values = split_values(value)
        if len(values) != 1:
            raise forbidden("_id must name one patient (a doctor reads one patient at a time)")
        return PatientSelector(person_id=unescape(values[0]))
    if modifier == "identifier":
        return PatientSelector(identifier=_identifier_value(value, f"{param.name}:identifier"))
    if modifier not in ("", "Patient"):
        raise not_supported(
            f"modifier :{modifier} is not supported on {param.name} (use :identifier or none)"
        )
    values = split_values(value)
    if len(values) != 1:
        raise forbidden(
            f"{param.name} must name one patient (a doctor reads one named patient at a time)"
        )
    return PatientSelector(person_id=patient_id(unescape(values[0]), param.name))


def patient_id(reference: str, name: str = "patient") -> str:
    """The id in `Patient/<id>`, `<id>` or `<base>/Patient/<id>[/_history/<v>]`."""
    ref = reference.split("/_history/")[0].rstrip("/")
    parts = ref.split("/")
    if len(parts) == 1:
        return parts[0]
    if parts[-2] != "Patient":
        raise invalid(f"{name} must reference a Patient (Patient/<id>), not {parts[-2]}")
    if not parts[-1]:
        raise invalid(f"{name} names no Patient id")
    return parts[-1]


def _how_to_name(rtype: str) -> str:
    if rtype == "Patient":
        return "identifier=system|value, or _id=<mrb person id>"
    return "patient=Patient/<id>, or subject:identifier=system|value"


def parse_count(value: str) -> int:
    """`_count`: a whole number, at most MAX_COUNT (more is capped, not refused)."""
    try:
        n = int(value)
    except ValueError:
        raise invalid(f"_count must be a whole number, not {value[:20]!r}") from None
    if n < 0:
        raise invalid("_count must not be negative")
    return min(n, MAX_COUNT)


def _sort(rtype: str, value: str) -> tuple[tuple[tuple[str, bool], ...], list[str]]:
    keys: list[tuple[str, bool]] = []
    unknown: list[str] = []
    allowed: Sequence[str] = SORTS[rtype]
    for raw in value.split(","):
        raw = raw.strip()
        if not raw:
            continue
        descending = raw.startswith("-")
        key = raw.removeprefix("-")
        if key in allowed:
            keys.append((key, descending))
        else:
            unknown.append(raw)
    return tuple(keys), unknown


def check_prefer(header: str | None) -> bool:
    """Whether `Prefer` asks for strict handling (`handling=strict`)."""
    if not header:
        return False
    for part in header.replace(",", ";").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "handling":
            return value.strip().strip('"').lower() == "strict"
    return False
