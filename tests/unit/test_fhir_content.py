"""What ingest calls usable content (the NO_VALUE codes the rules read), from FHIR."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker.ingest.parse import parse_message
from tests import factories as f

SHANGHAI = ZoneInfo("Asia/Shanghai")


def lone(obs: dict[str, Any], *extra: tuple[str, dict[str, Any]]) -> str | None:
    obs = {**obs, "identifier": [{"system": "urn:lab:H001", "value": "X-1"}]}
    value = f.bundle([("urn:uuid:patient", f.patient()), ("urn:uuid:o", obs), *extra])
    (result,) = parse_message(value, hospital="H001", zone=SHANGHAI).results
    (item,) = result.items
    return item.no_value


def hb(**changes: Any) -> dict[str, Any]:
    obs = f.observation("hb", "718-7", 13.2)
    obs.update(changes)
    return {k: v for k, v in obs.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        ({"valueQuantity": None}, "no-value"),
        ({"valueQuantity": {"unit": "g/dL"}}, "no-value"),  # a unit without a number
        ({"valueQuantity": None, "valueString": "  "}, "no-value"),
        ({"valueQuantity": None, "valueString": "阴性"}, None),
        ({"valueQuantity": None, "valueCodeableConcept": {}}, "no-value"),
        ({"valueQuantity": None, "valueBoolean": False}, None),
        (
            {"valueQuantity": None, "dataAbsentReason": {"coding": [{"code": "not-performed"}]}},
            "data-absent:not-performed",
        ),
        ({"interpretation": [{"text": "标本溶血"}]}, "specimen-condition:HEM"),
    ],
)
def test_usable_content(changes: dict[str, Any], expected: str | None) -> None:
    assert lone(hb(**changes)) == expected


def test_a_rejected_specimen() -> None:
    specimen = {
        "resourceType": "Specimen",
        "id": "sp",
        "status": "unsatisfactory",
        "extension": [
            {
                "url": "urn:mrb:fhir:extension:specimen-reject-reason",
                "valueCodeableConcept": {"coding": [{"code": "QS"}]},
            }
        ],
    }
    obs = hb(specimen={"reference": "urn:uuid:sp"})
    assert lone(obs, ("urn:uuid:sp", specimen)) == "specimen-rejected:QS"
