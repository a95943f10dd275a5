"""Ingest's per-message shortcuts (issue #16) give what the longer ways gave: a parent's
specimen and mark worked out once, timestamps parsed once per message, the imaging
coverage built once per catalog, an item's hash and sealed text made once for its rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from broker.domain.catalog import Catalog, ItemKind
from broker.domain.mapping import unmapped_codes
from broker.domain.results import Coding, ResultItem
from broker.ingest.parse import parse_message
from broker.reference.loader import default_schemas_dir, load_catalog
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.protect import Protector
from broker.storage.results import item_rows
from mrb_wire.fhir import RECOGNITION_MARK_URL
from tests import factories as f

SHANGHAI = ZoneInfo("Asia/Shanghai")
HAEMOLYSED = {
    "resourceType": "Specimen",
    "id": "bad",
    "condition": [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0493", "code": "HEM"}]}
    ],
}
GOOD = {"resourceType": "Specimen", "id": "good"}


def report_with(*observations: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": "dr",
        "identifier": [{"system": "urn:lab:H001", "value": "ACC-1"}],
        "status": "final",
        "code": {"coding": [{"system": f.LOINC, "code": "58410-2"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": "2026-05-18T08:30:00+08:00",
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        **changes,
    }


def parsed_items(*entries: tuple[str, dict[str, Any]]) -> dict[str | None, ResultItem]:
    value = f.bundle([("urn:uuid:patient", f.patient()), *entries])
    (result,) = parse_message(value, hospital="H001", zone=SHANGHAI).results
    return {item.resource_id: item for item in result.items}


def test_members_without_a_specimen_take_the_reports() -> None:
    own = {**f.observation("own", "718-7", 13.2), "specimen": {"reference": "urn:uuid:good"}}
    plain = [f.observation(f"o{i}", "777-3", 250) for i in range(3)]
    report = report_with(own, *plain, specimen=[{"reference": "urn:uuid:bad"}])
    items = parsed_items(
        ("urn:uuid:dr", report),
        ("urn:uuid:bad", HAEMOLYSED),
        ("urn:uuid:good", GOOD),
        ("urn:uuid:own", own),
        *((f"urn:uuid:{o['id']}", o) for o in plain),
    )
    assert items["own"].no_value is None  # its own specimen is fine
    assert [items[f"o{i}"].no_value for i in range(3)] == ["specimen-condition:HEM"] * 3


def test_members_without_a_mark_take_the_reports() -> None:
    mark = [{"url": RECOGNITION_MARK_URL, "valueString": "全国HR"}]
    own = {**f.observation("own", "718-7", 13.2), "extension": [{**mark[0], "valueString": "X"}]}
    plain = f.observation("plain", "777-3", 250)
    items = parsed_items(
        ("urn:uuid:dr", report_with(own, plain, extension=mark)),
        ("urn:uuid:own", own),
        ("urn:uuid:plain", plain),
    )
    assert items["dr"].recognition_mark == "全国HR"
    assert items["own"].recognition_mark == "X"
    assert items["plain"].recognition_mark == "全国HR"


def test_a_timestamp_repeated_in_a_message_says_its_zone_for_every_result() -> None:
    """Parsed once per message: each result still learns that its zone was assumed."""
    local = "2026-05-18T08:30:00"
    lone = [
        {
            **f.observation(f"o{i}", "718-7", 13.2, effective=local),
            "identifier": [{"system": "urn:lab:H001", "value": f"X-{i}"}],
        }
        for i in range(2)
    ]
    value = f.bundle(
        [("urn:uuid:patient", f.patient())] + [(f"urn:uuid:o{i}", o) for i, o in enumerate(lone)]
    )
    results = parse_message(value, hospital="H001", zone=SHANGHAI).results
    assert [r.timezone_assumed for r in results] == [True, True]
    assert {r.effective for r in results} == {datetime(2026, 5, 18, 8, 30, tzinfo=SHANGHAI)}
    assert results[0].effective is not None and results[0].effective.tzinfo is SHANGHAI


def test_a_bad_timestamp_is_refused_wherever_it_recurs() -> None:
    obs = f.observation("o", "718-7", 13.2, effective="2026-13-99")
    with pytest.raises(Exception, match="effectiveDateTime"):
        parsed_items(
            ("urn:uuid:dr", report_with(obs, effectiveDateTime="2026-13-99")), ("urn:uuid:o", obs)
        )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_schemas_dir())


def scanned(catalog: Catalog, modality: str, site: str) -> bool:
    """What `imaging_coverage` replaced: a scan of every item."""
    canonical = catalog.sites.canonical(site)
    return any(
        i.kind is ItemKind.IMAGING
        and modality.upper() in i.modalities()
        and catalog.sites.canonical(i.body_site) == canonical
        for i in catalog.items.values()
    )


def test_imaging_coverage_answers_as_the_scan_did(catalog: Catalog) -> None:
    sites = {i.body_site for i in catalog.items.values() if i.body_site} | {"unknown-site"}
    modalities = {m for i in catalog.items.values() for m in i.modalities()} | {"cr", "PET", ""}
    for site in sites:
        for modality in modalities:
            covered = (modality.upper(), catalog.sites.canonical(site)) in catalog.imaging_coverage
            assert covered == scanned(catalog, modality, site), (modality, site)


def test_an_uncovered_imaging_site_goes_on_the_worklist(catalog: Catalog) -> None:
    site = next(
        i.body_site for i in catalog.items.values() if i.kind is ItemKind.IMAGING and i.body_site
    )
    body = Coding("http://snomed.info/sct", site, "site")
    item = ResultItem(
        "ImagingStudy", "s", (), "available", None, "study", modality="CT", body_site=body
    )
    covered = scanned(catalog, "CT", site)
    assert (unmapped_codes(catalog, "H001", [item]) == []) == covered
    assert unmapped_codes(
        catalog,
        "H001",
        [
            ResultItem(
                "ImagingStudy", "s", (), "available", None, "x", modality="ZZ", body_site=body
            )
        ],
    )


class CountingProtector(Protector):
    def __init__(self) -> None:
        super().__init__(PayloadCipher({"k1": bytes(range(32))}, "k1"), Pseudonymiser(bytes(32)))
        self.keys = 0
        self.seals = 0

    def resource_key(self, hospital: str, resource_id: str | None) -> str | None:
        self.keys += 1
        return super().resource_key(hospital, resource_id)

    def seal_item(
        self, result_id: str, summary: str, value: str | None, images: str | None = None
    ) -> bytes:
        self.seals += 1
        return super().seal_item(result_id, summary, value, images)


def test_item_rows_hash_and_seal_each_item_once() -> None:
    codings = tuple(Coding(f"urn:s{i}", f"c{i}", f"display {i}" if i else None) for i in range(3))
    at = datetime(2026, 5, 18, tzinfo=UTC)
    items = (
        ResultItem(
            "Observation",
            "o1",
            codings,
            "final",
            at,
            "Hb: 13",
            value="13",
            unit="g/dL",
            flags=("H",),
        ),
        ResultItem("Observation", None, (), "final", None, "uncoded"),
    )
    protector = CountingProtector()
    rows = item_rows("r1", "H001", "p1", items, protector)
    assert (protector.keys, protector.seals) == (2, 2)
    assert [(r["code_system"], r["code"], r["display"]) for r in rows] == [
        ("urn:s0", "c0", ""),
        ("urn:s1", "c1", "display 1"),
        ("urn:s2", "c2", "display 2"),
        (None, None, None),
    ]
    first = rows[0]
    for row in rows[1:3]:  # the coding rows of one item: all else alike, each its own dict
        assert row is not first
        assert {k: v for k, v in row.items() if k not in ("code_system", "code", "display")} == {
            k: v for k, v in first.items() if k not in ("code_system", "code", "display")
        }
    assert protector.open_item("r1", first["clinical"], "") == ("Hb: 13", "13")
    assert list(first) == list(rows[3])  # the same columns, in the same order
    assert rows[3]["resource_id"] is None
