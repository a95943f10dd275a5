"""The doctor's workbench in headless Chromium, and the reference endpoints it reads.

One stack (SQLite) for the module: two named hospitals, a CBC panel (haemoglobin flagged
high, with its reference range) and a chest CT from 泸州市人民医院, seen by a doctor of
泸县人民医院. The doctor finds items by their Chinese names, runs a check for the patient
by resident ID with a stated purpose, reads each decision in words with hospital names and
China Standard Time dates, recognises one item and declines another with a reason, sees
the withdrawal notice, and every link the page shows answers 200. The reference endpoints
read files, not the database, so SQLite alone covers them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from broker.domain.actors import Role
from broker.domain.registry import Certification, CertifyingBody
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import bearer, free_port, seed_hospitals
from tests.e2e.accessibility import assert_accessible
from tests.e2e.conftest import CHROMIUM
from tests.e2e.screenshots import screenshot
from tests.e2e.test_doctor_images_link import Pacs, ct_with_viewer, stand_in_pacs
from tests.e2e.test_web_pages import Visited, account, index, signed_in

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

ISSUER = hospitals.Hospital("H001", "泸州市人民医院", "510502", "3")
ORDERING = hospitals.Hospital("H002", "泸县人民医院", "510502", "2")


def lab_bundle(today: str, *, status: str = "final", version: str = "1") -> bytes:
    """f.lab_bundle with a reference range and a high flag on haemoglobin."""
    doc = json.loads(
        f.lab_bundle(
            effective=f"{today}T08:00:00+08:00",
            last_updated=None if status == "final" else f"{today}T12:00:00+08:00",
            status=status,
            version=version,
            hb=17.9,
        )
    )
    for entry in doc["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Observation" and res["id"] == "hb":
            res["referenceRange"] = [
                {"low": {"value": 11.5, "unit": "g/dL"}, "high": {"value": 15.0, "unit": "g/dL"}}
            ]
            res["interpretation"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                            "code": "H",
                        }
                    ]
                }
            ]
    return json.dumps(doc, ensure_ascii=False).encode()


@dataclass
class World:
    stack: Stack
    today: str
    ct_day: str
    pacs: Pacs  # the issuing hospital's PACS viewer, outside mrb: a local stand-in


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("workbench")
    settings = Settings(
        data_dir=tmp / "data", http_port=free_port(), metrics_port=0, create_keys=True
    )
    with stand_in_pacs() as pacs:
        async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
            yield await _populate(stack, pacs)


async def _populate(stack: Stack, pacs: Pacs) -> World:
    c = stack.container
    await seed_hospitals(c, ISSUER, ORDERING)
    async with c.sessions() as s, s.begin():
        for scope, body in (
            ("HEMATOLOGY", CertifyingBody.PROVINCIAL_EQA),
            ("CT", CertifyingBody.PROVINCIAL_IMAGING_QC),
        ):
            cert = Certification("H001", scope, body, date(2025, 1, 1), date(2035, 12, 31))
            await hospitals.certify(s, cert, reference=None)
    today = date.today().isoformat()
    await index(stack, lab_bundle(today))
    # 07:30 in China is 23:30 UTC the day before: the page must show China's day.
    ct_day = (date.today() - timedelta(days=10)).isoformat()
    await index(stack, ct_with_viewer(pacs, f"{ct_day}T07:30:00+08:00"))
    await account(stack, "dr-li", Role.DOCTOR, "H002")
    return World(stack, today, ct_day, pacs)


# -- the reference endpoints -------------------------------------------------------------


async def _get(world: World, path: str, role: str = "doctor", **params: Any) -> httpx.Response:
    hospital = "H002" if role in ("doctor", "finance", "admin", "adapter") else "*"
    headers = await bearer(world.stack.container, role, hospital, f"{role}-ref")
    async with httpx.AsyncClient(base_url=world.stack.api_url, headers=headers) as http:
        return await http.get(path, params=params)


async def test_catalog_search_by_chinese_name_code_and_loinc(world: World) -> None:
    by_name = (await _get(world, "/api/v1/catalog/items", q="血红蛋白")).json()
    assert by_name[0]["code"] == "LAB-HGB"
    assert by_name[0]["name"] == {"zh": "血红蛋白", "en": "Hemoglobin"}
    assert by_name[0]["system"] == "urn:mrb:catalog" and by_name[0]["kind"] == "lab"
    by_loinc = (await _get(world, "/api/v1/catalog/items", q="718-7")).json()
    assert by_loinc[0]["code"] == "LAB-HGB"  # an exact code first
    by_code = (await _get(world, "/api/v1/catalog/items", q="lab-hgb")).json()
    assert by_code[0]["code"] == "LAB-HGB"
    knee = (await _get(world, "/api/v1/catalog/items", q="膝关节MRI", kind="imaging")).json()
    assert knee and all(i["kind"] == "imaging" for i in knee)
    first = knee[0]
    assert first["modality"] == "MR" and first["sided"] is True
    assert first["body_site"]["code"] == "72696002" and first["body_site"]["zh"]
    assert first["protocol"]["code"] in ("plain", "enhanced") and first["protocol"]["zh"]
    assert (await _get(world, "/api/v1/catalog/items", q="没有这个项目")).json() == []
    limited = (await _get(world, "/api/v1/catalog/items", q="", limit=5)).json()
    assert len(limited) == 5
    bad = await _get(world, "/api/v1/catalog/items", q="x", kind="nope")
    assert bad.status_code == 422


async def test_the_vocabulary_names_purposes_identifiers_and_decisions(world: World) -> None:
    vocab = (await _get(world, "/api/v1/reference/vocabulary")).json()
    purposes = {p["v3"]: p for p in vocab["purposes"]}
    assert purposes["TREAT"]["name"]["zh"] == "诊疗" and not purposes["TREAT"]["emergency"]
    assert purposes["ETREAT"]["emergency"] is True
    assert "HPAYMT" not in purposes  # not a doctor's purpose
    systems = {s["code"]: s for s in vocab["identifier_systems"]}
    assert vocab["identifier_systems"][0]["code"] == "resident-id"
    assert systems["resident-id"]["uri"] == f.NATIONAL
    assert systems["health-card"]["scope"] == "national"
    assert systems["mrn"]["scope"] == "hospital" and systems["mrn"]["name"]["zh"] == "病案号"
    decisions = {d["code"]: d["zh"] for d in vocab["decisions"]}
    assert decisions["RECOGNIZABLE"] == "可互认" and len(decisions) == 10
    assert {s["code"] for s in vocab["sides"]} == {"24028007", "7771000", "51440002"}
    assert {"plain", "enhanced"} <= {p["code"] for p in vocab["protocols"]}


async def test_reference_reads_need_a_reference_role(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.stack.api_url) as http:
        assert (await http.get("/api/v1/reference/vocabulary")).status_code == 401
    assert (await _get(world, "/api/v1/catalog/items", role="audit", q="x")).status_code == 403
    ok = await _get(world, "/api/v1/reference/vocabulary", role="platform-finance")
    assert ok.status_code == 200


# -- the page ------------------------------------------------------------------------------

UTC_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\d{2}:\d{2}(:\d{2})?(\.\d+)?Z\b|UTC")


async def add_item(page: Any, name: str, count: int) -> None:
    """Type a name in the item search, pick the first match, wait for it to be listed."""
    await page.fill("#item-search", name)
    match = page.locator("#item-results li.catalog-item", has_text=name).first
    await match.locator("button.add").click()
    await page.wait_for_function(
        "n => document.querySelectorAll('#picked li.picked-item').length === n", arg=count
    )


async def every_link_resolves(page: Any) -> list[str]:
    hrefs: list[str] = await page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert hrefs
    for href in hrefs:
        response = await page.context.request.get(href)
        assert response.status == 200, (href, response.status, await response.text())
    return hrefs


async def test_a_doctor_checks_recognises_declines_and_is_notified(
    world: World, browser: Any
) -> None:
    stack = world.stack
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await signed_in(page, stack, "/doctor", "dr-li")
    await page.wait_for_selector("#id-system option", state="attached")
    assert "居民身份证" in await page.inner_text("#id-system")
    assert "病案号" in await page.inner_text("#id-system")
    assert await page.eval_on_selector("#purpose", "s => s.value") == "TREAT"
    await assert_accessible(page)  # the empty workbench

    await add_item(page, "血红蛋白", 1)
    await add_item(page, "胸部CT平扫", 2)
    await add_item(page, "糖化血红蛋白", 3)
    picked = await page.locator("#picked li.picked-item").all_inner_texts()
    assert "血红蛋白" in picked[0] and "胸部CT平扫" in picked[1]
    assert "平扫" in picked[1] and "CT" in picked[1]  # body site and protocol shown
    await assert_accessible(page)  # items found in the catalog and picked

    await page.fill("#patient", f.PATIENT_A)
    await page.click("#run-check")
    await page.wait_for_selector("#answer:not([hidden])")
    await page.wait_for_selector("#timeline:not([hidden])")
    rows = page.locator("#answer tbody tr")
    codes = [await r.get_attribute("data-decision") for r in await rows.all()]
    assert codes == ["RECOGNIZABLE", "RECOGNIZABLE", "NO_PRIOR_RESULT"], await page.inner_text(
        "#answer"
    )
    decisions = await page.locator("td.decision").all_inner_texts()
    assert decisions[0].startswith("可互认") and "recognisable" in decisions[0]
    assert decisions[2].startswith("无可用既往结果")

    hb = await page.inner_text("tr[data-item='0']")
    assert "泸州市人民医院" in hb and "H001" not in hb
    assert f"{world.today} 08:00" in hb  # China Standard Time
    assert "17.9 g/dL" in hb and "11.5–15 g/dL" in hb, hb  # value, unit, range
    assert "偏高" in hb and "已终审" in hb and "可互认至" in hb
    assert await page.locator("tr[data-item='0'] li.warning").count() >= 1
    ct = await page.inner_text("tr[data-item='1']")
    assert "泸州市人民医院" in ct and f"{world.ct_day} 07:30" in ct

    timeline = await page.inner_text("#timeline")
    assert "泸州市人民医院" in timeline and "血红蛋白" in timeline
    assert "参考范围" in timeline and world.ct_day in timeline
    app_text = await page.inner_text("#app")
    assert not UTC_TEXT.search(app_text), UTC_TEXT.search(app_text)
    await assert_accessible(page)  # the check's decisions and the timeline

    await page.click("tr[data-item='0'] button.accept")
    await page.wait_for_selector("tr[data-item='0'] td.outcome:has-text('已互认')")
    reason = page.locator("tr[data-item='1'] select.reason")
    assert "质量" in await reason.inner_text() or "疑" in await reason.inner_text()
    await reason.select_option("QUALITY_DOUBT")
    await page.fill("tr[data-item='1'] input.reason-text", "层厚不足")
    await page.click("tr[data-item='1'] button.decline")
    await page.wait_for_selector("tr[data-item='1'] td.outcome:has-text('未互认')")
    assert "层厚不足" in await page.inner_text("tr[data-item='1'] td.outcome")
    # The check's decisions (outcomes recorded) and the timeline below them.
    data_dir = stack.container.settings.data_dir
    await screenshot(page, data_dir, "doctor", height=1000, top="#run-check")
    links = await every_link_resolves(page)
    assert any("/fhir/ImagingStudy/" in h for h in links)
    assert any("/fhir/DiagnosticReport/" in h for h in links)
    assert any(h.startswith(f"{world.pacs.base}/viewer?") for h in links)  # images

    # The haemoglobin result is withdrawn at the issuing hospital: a notice.
    await index(stack, lab_bundle(world.today, status="entered-in-error", version="2"))
    await page.click("#refresh")
    await page.wait_for_selector("li.notice")
    notice = await page.inner_text("li.notice")
    assert "结果已撤回" in notice and "血红蛋白" in notice and "reversed" in notice
    assert not UTC_TEXT.search(notice)
    await every_link_resolves(page)
    await page.click("li.notice button.mark-read")
    await page.wait_for_selector("li.notice.read")
    await assert_accessible(page)  # outcomes recorded, a notice read
    assert errors == []
    visited.assert_clean(f.PATIENT_A)
