"""Every body part the adapters can emit lands on a catalog item or on the unmapped-code
worklist: a study is never indexed against nothing without anyone being told."""

from __future__ import annotations

import pytest

from adapters.dicom.body_parts import ALIASES, BODY_PARTS, CATALOG_EQUIVALENTS, body_part
from broker.domain.catalog import Catalog, ItemKind
from broker.domain.mapping import unmapped_codes
from broker.domain.results import Coding, ResultItem
from broker.reference.loader import default_schemas_dir, load_catalog

SNOMED = "http://snomed.info/sct"
MODALITIES = ("CT", "MR", "DX", "CR", "US", "MG", "NM", "PT")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(default_schemas_dir())


def _study_item(modality: str, code: str) -> ResultItem:
    return ResultItem(
        "ImagingStudy", "s", (), "available", None, "study", modality, Coding(SNOMED, code, "x")
    )


def _on_an_item(catalog: Catalog, modality: str, code: str) -> bool:
    canonical = catalog.sites.canonical(code)
    return any(
        i.kind is ItemKind.IMAGING
        and modality in i.modalities()
        and catalog.sites.canonical(i.body_site) == canonical
        for i in catalog.items.values()
    )


@pytest.mark.parametrize("term", sorted({*BODY_PARTS, *ALIASES}))
def test_every_dicom_body_part_the_adapter_emits_is_known_to_the_site_table(
    catalog: Catalog, term: str
) -> None:
    part = body_part(term)
    assert part is not None
    assert catalog.sites.site(part.code) is not None, f"{term} -> {part.code} not in body-sites"


@pytest.mark.parametrize("term", sorted(BODY_PARTS))
@pytest.mark.parametrize("modality", MODALITIES)
def test_each_body_part_lands_on_an_item_or_on_the_worklist(
    catalog: Catalog, term: str, modality: str
) -> None:
    code = BODY_PARTS[term].code
    listed = unmapped_codes(catalog, "H001", [_study_item(modality, code)])
    if _on_an_item(catalog, modality, code):
        assert listed == []
    else:
        assert [(c.system, c.code) for c in listed] == [(SNOMED, code)]


@pytest.mark.parametrize("code", sorted({*CATALOG_EQUIVALENTS, *CATALOG_EQUIVALENTS.values()}))
def test_annex_l_spellings_fold_onto_the_catalogs(catalog: Catalog, code: str) -> None:
    assert catalog.sites.canonical(code) == catalog.sites.canonical(
        CATALOG_EQUIVALENTS.get(code, code)
    )


def test_a_site_nobody_knows_goes_to_the_worklist(catalog: Catalog) -> None:
    listed = unmapped_codes(catalog, "H001", [_study_item("CT", "999999999")])
    assert [c.code for c in listed] == ["999999999"]


def test_every_catalog_imaging_site_is_in_the_table(catalog: Catalog) -> None:
    missing = {
        i.code: i.body_site
        for i in catalog.items.values()
        if i.kind is ItemKind.IMAGING and catalog.sites.site(i.body_site) is None
    }
    assert missing == {}
