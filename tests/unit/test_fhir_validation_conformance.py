"""Fast FHIR validation gives the verdict and DLQ code of full fhir.resources validation.

Corpora: the shared real data, the demo's messages (good and bad), seeded mutations of
valid resources (wrong types, bad primitives, unknown elements, two value[x], missing
required elements, nulls, wrong resourceType, deep and wide content) and every primitive
type against a table of awkward values. The one deliberate difference is checked on its
own: a complex element sent as a JSON string.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker.demo.dataset import generate
from broker.domain.rejections import RejectCode, Rejected
from broker.ingest.fhir_bundle import read_entries
from broker.ingest.fhir_validation import IN_SCOPE, FhirValidation
from broker.ingest.message_json import decode_json
from broker.ingest.parse import ParseLimits, parse_message
from broker.settings import Settings

Json = dict[str, Any]
SEED = 16
MUTATIONS = 400

AWKWARD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    1.5,
    -0.0,
    1e300,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x",
    "a b",
    " final",
    "final ",
    "fi  nal",
    "line\nbreak",
    "a" * 256,
    "a" * 64,
    "2020",
    "2020-13",
    "2020-02",
    "2020-02-30",
    "2020-02-29",
    "2021-02-29",
    "2020-1-1",
    "2020-01-01T10:00",
    "2020-01-01T10:00:00",
    "2020-01-01T10:00:00.123",
    "2020-01-01T10:00:00+08:00",
    "2020-01-01T10:00:00Z",
    "2020-01-01T24:00:00Z",
    "2020-01-01T10:00:00+15:00",
    "2016-12-31T23:59:60Z",
    "2016-12-31T23:59:60",
    "2020-01-01T10:00:00.1234567Z",
    "10:00:00",
    "24:00:00",
    "23:59:60",
    "10:00",
    "1.50",
    "01",
    "1e5",
    "-0",
    "+1",
    ".5",
    "5.",
    "NaN",
    "true",
    "yes",
    "0",
    "1",
    "urn:oid:1.2.3",
    "urn:oid:3.1",
    "http://x y",
    "/Patient/1",
    "Patient/1",
    "urn:uuid:x",
    "aGVsbG8=",
    "aGVsbG8",
    "!!!!",
    "b6a2e1b0-0c4a-4f4e-9a5e-3c2f1d0e9b8a",
    [],
    [None],
    ["x"],
    [1],
    [{}],
    {},
    {"foo": 1},
    {"text": "x"},
    {"extension": []},
    {"extension": [{"url": "u", "valueString": "x"}]},
    {"url": "u"},
    {"resourceType": "Patient"},
    {"resourceType": "Foo"},
]


def outcome(doc: Json, content_type: str | None, mode: FhirValidation) -> str:
    try:
        read_entries(doc, content_type, mode)
    except Rejected as exc:
        return exc.code.value
    return "accepted"


def assert_same(cases: Iterator[tuple[str, Json, str | None]]) -> int:
    differences, count = [], 0
    for label, doc, content_type in cases:
        count += 1
        fast = outcome(copy.deepcopy(doc), content_type, "fast")
        full = outcome(copy.deepcopy(doc), content_type, "full")
        if fast != full:
            differences.append(f"{label}: fast {fast}, full {full}")
    assert not differences, "\n".join(differences[:20])
    return count


def bundle(*resources: Json) -> Json:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in resources],
    }


def in_scope(doc: Json) -> list[Json]:
    if doc.get("resourceType") == "Bundle":
        found = [e.get("resource") for e in doc.get("entry") or [] if isinstance(e, dict)]
        return [r for r in found if isinstance(r, dict) and r.get("resourceType") in IN_SCOPE]
    return [doc] if doc.get("resourceType") in IN_SCOPE else []


def realdata_docs(realdata: Path) -> list[tuple[str, Json]]:
    docs = []
    for path in sorted((realdata / "fhir").rglob("*.json")):
        try:
            doc = decode_json(path.read_bytes(), max_bytes=10**7, max_depth=64)
        except Rejected:
            continue
        docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="module")
def demo() -> list[tuple[str, Json, str | None]]:
    messages = generate(now=datetime(2026, 12, 1, tzinfo=UTC), patients=60).messages
    out = []
    for m in messages:
        try:
            doc = decode_json(m.value, max_bytes=10**7, max_depth=64)
        except Rejected:
            continue  # refused before validation: nothing to compare
        out.append((m.note, doc, m.content_type))
    return out


def test_real_data_gets_the_same_verdicts(realdata: Path) -> None:
    docs = realdata_docs(realdata)
    assert len(docs) >= 40
    assert assert_same((name, doc, None) for name, doc in docs) == len(docs)


def test_the_real_stu3_content_is_unsupported_fhir_version_either_way(realdata: Path) -> None:
    for name, doc in realdata_docs(realdata):
        if "stu3" in name:
            assert outcome(doc, None, "fast") == RejectCode.UNSUPPORTED_FHIR_VERSION.value


def test_demo_messages_get_the_same_verdicts(demo: list[tuple[str, Json, str | None]]) -> None:
    assert assert_same(iter(demo)) == len(demo)


def positions(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key or index under node, as a path from it."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        yield (*path, key)
        if isinstance(child, (dict, list)):
            yield from positions(child, (*path, key))


def put(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def mutants(valid: list[Json], rng: random.Random) -> Iterator[tuple[str, Json, str | None]]:
    for n in range(MUTATIONS):
        resource = copy.deepcopy(rng.choice(valid))
        kind = rng.choice(["replace", "replace", "replace", "add", "delete", "choice"])
        paths = [p for p in positions(resource) if p != ("resourceType",)]
        path = rng.choice(paths)
        if kind == "replace":
            put(resource, path, copy.deepcopy(rng.choice(AWKWARD)))
        elif kind == "add":  # an unknown element, or a known one where it does not belong
            parent = resource
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                parent[rng.choice(["foo", "valueString", "_status", "status", "resourceType"])] = (
                    copy.deepcopy(rng.choice(AWKWARD))
                )
        elif kind == "delete":
            parent = resource
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        else:  # a second value[x] or effective[x]
            resource[rng.choice(["valueString", "valueBoolean", "effectiveDateTime"])] = rng.choice(
                ["x", True, "2020-01-01", None]
            )
        yield f"mutation {n} ({kind} at {path})", bundle(resource), None


def test_mutated_resources_get_the_same_verdicts(
    realdata: Path, demo: list[tuple[str, Json, str | None]]
) -> None:
    valid = [
        r
        for _, doc, content_type in demo
        if outcome(doc, content_type, "full") == "accepted"
        for r in in_scope(doc)
    ]
    valid += [r for _, doc in realdata_docs(realdata) for r in in_scope(doc)]
    assert assert_same(mutants(valid, random.Random(SEED))) == MUTATIONS


OBSERVATION: Json = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    "subject": {"reference": "Patient/p1"},
}
# One element of each primitive type mrb's resources use, as a path into OBSERVATION.
PRIMITIVE_PATHS = {
    "dateTime": ("effectiveDateTime",),
    "instant": ("issued",),
    "date": ("contained", 0, "birthDate"),  # through the full models, as contained
    "period dateTime": ("effectivePeriod", "start"),
    "time": ("valueTime",),
    "decimal": ("valueQuantity", "value"),
    "integer": ("valueInteger",),
    "positiveInt": ("valueSampledData", "dimensions"),
    "code": ("status",),
    "id": ("id",),
    "string": ("valueString",),
    "uri": ("code", "coding", 0, "system"),
    "boolean": ("valueBoolean",),
    "canonical": ("meta", "profile", 0),
    "url": ("extension", 0, "valueUrl"),
    "oid": ("extension", 0, "valueOid"),
    "uuid": ("extension", 0, "valueUuid"),
    "base64Binary": ("extension", 0, "valueBase64Binary"),
    "markdown": ("note", 0, "text"),
    "unsignedInt": ("extension", 0, "valueUnsignedInt"),
    "date in extension": ("extension", 0, "valueDate"),
    "instant in extension": ("extension", 0, "valueInstant"),
}


def primitive_cases() -> Iterator[tuple[str, Json, str | None]]:
    for kind, path in PRIMITIVE_PATHS.items():
        for value in AWKWARD:
            doc = copy.deepcopy(OBSERVATION)
            if path[0] == "contained":
                doc["contained"] = [{"resourceType": "Patient"}]
            if path[0] == "extension":
                doc["extension"] = [{"url": "http://example.org/x"}]
            if path[0] == "valueSampledData":
                doc["valueSampledData"] = {"origin": {"value": 0}, "period": 1}
            parents = {"effectivePeriod": {}, "valueQuantity": {}, "meta": {"profile": [None]}}
            if path[0] in parents:
                doc[path[0]] = copy.deepcopy(parents[path[0]])
            if path[0] == "note":
                doc["note"] = [{}]
            put(doc, path, copy.deepcopy(value))
            yield f"{kind} = {value!r:.40}", doc, None


def test_every_primitive_type_gets_the_same_verdicts() -> None:
    count = assert_same(primitive_cases())
    assert count == len(PRIMITIVE_PATHS) * len(AWKWARD)


def nested_extensions(depth: int, leaf: Any) -> Json:
    ext: Json = {"url": "http://example.org/leaf", "valueDateTime": leaf}
    for _ in range(depth):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    return ext


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({**OBSERVATION, "extension": [nested_extensions(30, "2020")]}, id="deep"),
        pytest.param(
            {**OBSERVATION, "extension": [nested_extensions(30, "2020-01-01T10:00")]},
            id="deep zone-less",
        ),
        pytest.param(
            {**OBSERVATION, "extension": [nested_extensions(30, "2020-02-30")]}, id="deep invalid"
        ),
        pytest.param(
            {**OBSERVATION, "category": [{"text": str(i)} for i in range(5000)]}, id="wide"
        ),
        pytest.param(
            {**OBSERVATION, "category": [{"text": "x"}] * 100 + [None]}, id="wide with a null"
        ),
        pytest.param(
            {k: v for k, v in OBSERVATION.items() if k != "status"}
            | {"_status": {"extension": [{"url": "u", "valueCode": "unknown"}]}},
            id="status given by its extension",
        ),
        pytest.param(
            {k: v for k, v in OBSERVATION.items() if k != "status"}
            | {"effectiveDateTime": "2020-01-01T10:00"},
            id="missing status hidden by a zone-less time, as in the models",
        ),
        pytest.param(
            OBSERVATION | {"valueString": "a", "valueBoolean": True, "issued": "2020-01-01T10:00"},
            id="two values and a zone-less instant",
        ),
        pytest.param(
            OBSERVATION | {"valueString": "a", "valueInteger": 1, "effectiveDateTime": "2020"},
            id="two values",
        ),
        pytest.param(OBSERVATION | {"valueString": None, "valueInteger": 1}, id="null and value"),
        pytest.param(OBSERVATION | {"resourceType": "Patient"}, id="other resourceType"),
        pytest.param(
            OBSERVATION | {"code": {"resourceType": "Coding", "text": "x"}},
            id="resourceType inside an element",
        ),
        pytest.param(
            OBSERVATION | {"contained": [{"resourceType": "Foo"}]}, id="unknown contained type"
        ),
        pytest.param(
            OBSERVATION | {"contained": [{"resourceType": "Specimen", "status": "available"}]},
            id="contained Specimen",
        ),
        pytest.param(
            OBSERVATION | {"code": {"coding": [{"system": 5}]}}, id="number where a uri goes"
        ),
        pytest.param(OBSERVATION | {"valueAttachment": {"url": 5}}, id="R5 Attachment value in R4"),
    ],
)
def test_edge_cases_get_the_same_verdicts(doc: Json) -> None:
    assert assert_same(iter([("edge", bundle(doc), None)])) == 1


def test_a_complex_element_sent_as_a_json_string_is_refused_by_fast_only() -> None:
    """fhir.resources parses a string where an object goes; that is not FHIR JSON, and
    extraction reads the object, so fast validation refuses it (the one known difference)."""
    # (note is R4 only: the content is not STU3 either)
    doc = bundle(OBSERVATION | {"code": json.dumps({"text": "x"}), "note": [{"text": "x"}]})
    assert outcome(doc, None, "full") == "accepted"
    assert outcome(doc, None, "fast") == RejectCode.INVALID_FHIR.value


def test_rejections_name_the_place_and_never_echo_the_value() -> None:
    secret = "110101199003077777"
    doc = bundle(OBSERVATION | {"valueQuantity": {"value": secret + "x"}})
    with pytest.raises(Rejected) as info:
        read_entries(doc, None, "fast")
    assert info.value.code is RejectCode.INVALID_FHIR
    assert info.value.detail.startswith(
        "Bundle.entry[0].resource (Observation).valueQuantity.value: "
    )
    assert info.value.detail.endswith("(1 error(s))")
    assert secret not in info.value.detail


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_parse_message_takes_the_mode_from_its_limits(mode: FhirValidation) -> None:
    value = json.dumps(bundle(OBSERVATION | {"status": "fi  nal"})).encode()
    with pytest.raises(Rejected) as info:
        parse_message(value, hospital="H001", zone=UTC, limits=ParseLimits(fhir_validation=mode))
    assert info.value.code is RejectCode.INVALID_FHIR


def test_the_setting_chooses_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().fhir_validation == "fast"
    monkeypatch.setenv("MRB_FHIR_VALIDATION", "full")
    assert Settings().fhir_validation == "full"
    monkeypatch.setenv("MRB_FHIR_VALIDATION", "quick")
    with pytest.raises(ValidationError):
        Settings()
