"""Consent and opt-out on the doctor's workbench (issue #19 "Patient rights", must-have 2),
in headless Chromium, on the workbench's stack (tests/e2e/test_doctor_workbench.py: the
patient's results are 泸州市人民医院's, H001).

A doctor of H001 records the patient's consent to share HIV results with its evidence and
expiry, sees it listed in China Standard Time, withdraws it (after a confirm) and records
an opt-out; each change is audited under the patient's person id. A doctor of 泸县人民医院
(H002, no results of the patient) sees none of it and is shown the API's refusal. The
patient's identifier never enters a URL the page requests: the list is read by FHIR
POST _search, changes go in POST bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from broker.domain.actors import Role
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer
from tests.e2e.accessibility import assert_accessible
from tests.e2e.test_doctor_workbench import UTC_TEXT, World, world
from tests.e2e.test_web_pages import Visited, account, signed_in

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")

__all__ = ["world"]  # the workbench's stack, one per module


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def holding(world: World) -> AsyncIterator[World]:
    """The workbench's stack with a doctor of the hospital holding the patient's results."""
    await account(world.stack, "dr-zhao", Role.DOCTOR, "H001")
    yield world


async def test_the_vocabulary_names_the_sensitive_categories(world: World) -> None:
    headers = await bearer(world.stack.container, "doctor", "H002", "dr-ref")
    async with httpx.AsyncClient(base_url=world.stack.api_url, headers=headers) as http:
        vocab = (await http.get("/api/v1/reference/vocabulary")).json()
    categories = {c["code"]: c for c in vocab["sensitive_categories"]}
    assert categories["HIV"] == {"code": "HIV", "zh": "艾滋病病毒检测", "en": "HIV tests"}
    assert {"HIV", "SYPHILIS", "HBV", "HCV", "PSYCHIATRIC"} <= categories.keys()
    assert all(c["zh"] and c["en"] for c in categories.values())


async def open_panel(page: Any) -> None:
    await page.fill("#patient", f.PATIENT_A)
    await page.click("#show-consents")
    await page.wait_for_selector("#consent:not([hidden])")
    await page.wait_for_selector("#consent-list tbody tr")


async def test_a_doctor_records_withdraws_and_opts_out_for_the_patient(
    holding: World, browser: Any
) -> None:
    stack = holding.stack
    until = (date.today() + timedelta(days=180)).isoformat()
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await signed_in(page, stack, "/doctor", "dr-zhao")
    await page.wait_for_selector("#consent-category option", state="attached")
    assert "艾滋病病毒检测" in await page.inner_text("#consent-category")
    await open_panel(page)
    assert "暂无记录" in await page.inner_text("#consent-list")
    assert f.PATIENT_A in await page.inner_text("#consent-patient")

    # A consent to share HIV results, with its evidence and expiry.
    await page.select_option("#consent-kind", "sensitive")
    await page.select_option("#consent-category", "HIV")
    await page.fill("#consent-evidence", "FORM-2026-0001")
    await page.fill("#consent-expires", until)
    await page.click("#consent-record")
    row = page.locator("#consent-list tr[data-kind='sensitive']")
    await row.wait_for()
    text = await row.inner_text()
    assert "敏感结果授权" in text and "艾滋病病毒检测" in text and "HIV tests" in text
    assert "FORM-2026-0001" in text and "dr-zhao" in text and "泸州市人民医院" in text
    assert f"{until} 23:59" in text  # the end of the chosen day, in China
    assert await row.get_attribute("data-status") == "active"
    note = await page.inner_text("#consent-note")
    assert "下一次查询起生效" in note and "next check reflects it" in note
    assert await page.locator("#answer:not([hidden])").count() == 0  # nothing re-run

    # Withdraw: a dismissed confirm changes nothing; an accepted one withdraws.
    page.once("dialog", lambda d: d.dismiss())
    await row.locator("button.withdraw").click()
    assert await row.get_attribute("data-status") == "active"
    page.once("dialog", lambda d: d.accept())
    await row.locator("button.withdraw").click()
    await page.wait_for_selector("#consent-list tr[data-kind='sensitive'][data-status='inactive']")
    text = await row.inner_text()
    assert "已撤回" in text and "withdrawn" in text and text.count("dr-zhao") == 2
    assert await row.locator("button.withdraw").count() == 0
    assert "已撤回" in await page.inner_text("#consent-note")

    # An opt-out of cross-hospital sharing: no category, no expiry needed.
    await page.select_option("#consent-kind", "opt-out")
    assert await page.locator("#consent-category-label").is_hidden()
    await page.fill("#consent-expires", "")
    await page.fill("#consent-evidence", "FORM-2026-0002")
    await page.click("#consent-record")
    opt_out = page.locator("#consent-list tr[data-kind='opt-out']")
    await opt_out.wait_for()
    text = await opt_out.inner_text()
    assert "拒绝跨院共享" in text and "FORM-2026-0002" in text and "全部结果" in text
    assert "撤回前一直有效" in text  # an opt-out runs until withdrawn
    assert await opt_out.get_attribute("data-status") == "active"

    # Read afresh (FHIR Consent POST _search): both records, as they now stand.
    async with page.expect_response(lambda r: r.url.endswith("/fhir/Consent/_search")):
        await page.click("#show-consents")
    await page.wait_for_function(
        "() => document.querySelectorAll('#consent-list tr.consent-row').length === 2"
    )
    statuses = await page.eval_on_selector_all(
        "#consent-list tr.consent-row", "rows => rows.map(r => r.dataset.status)"
    )
    assert statuses == ["inactive", "active"]
    panel = await page.inner_text("#consent")
    assert "FORM-2026-0001" in panel and "FORM-2026-0002" in panel
    await assert_accessible(page)  # the consent panel with both records
    assert not UTC_TEXT.search(panel), UTC_TEXT.search(panel)
    assert errors == []
    visited.assert_clean(f.PATIENT_A)
    assert any(u.endswith("/fhir/Consent/_search") for u in visited.urls)

    # The API tells the same, and every change is audited under the patient's person id.
    headers = await bearer(stack.container, "doctor", "H001", "dr-zhao-api")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as http:
        listed = await http.get(
            "/api/v1/patients/consents", params={"identifier": f"{f.NATIONAL}|{f.PATIENT_A}"}
        )
    assert listed.status_code == 200, listed.text
    records = listed.json()
    assert [(r["kind"], r["category"], r["status"]) for r in records] == [
        ("sensitive", "HIV", "inactive"),
        ("opt-out", None, "active"),
    ]
    hiv, opt_out_record = records
    assert hiv["recorded_by"] == "dr-zhao" and hiv["withdrawn_by"] == "dr-zhao"
    assert hiv["evidence"] == "FORM-2026-0001" and hiv["expires"] is not None
    assert opt_out_record["expires"] is None and opt_out_record["recorded_hospital"] == "H001"

    async with stack.container.sessions() as s:
        rows = (
            await s.execute(
                select(audit_event)
                .where(audit_event.c.action.in_(["consent.record", "consent.withdraw"]))
                .order_by(audit_event.c.id)
            )
        ).all()
        reads = (
            await s.execute(
                select(audit_event)
                .where(audit_event.c.action == "fhir-search", audit_event.c.actor == "dr-zhao")
                .order_by(audit_event.c.id)
            )
        ).all()
    assert [(r.action, r.detail["kind"]) for r in rows] == [
        ("consent.record", "sensitive"),
        ("consent.withdraw", "sensitive"),
        ("consent.record", "opt-out"),
    ]
    assert {(r.actor, r.hospital_id) for r in rows} == {("dr-zhao", "H001")}
    assert rows[0].detail["category"] == "HIV" and rows[0].detail["expires"]
    assert rows[1].detail["consent_id"] == rows[0].detail["consent_id"] == hiv["id"]
    person = rows[0].person_id
    assert person and all(r.person_id == person for r in rows)
    consent_reads = [r for r in reads if r.detail.get("resource_type") == "Consent"]
    assert len(consent_reads) == 2 and all(r.purpose == "treatment" for r in consent_reads)
    assert all(r.person_id == person for r in consent_reads)


async def test_a_doctor_of_another_hospital_is_shown_the_refusal(
    world: World, browser: Any
) -> None:
    until = (date.today() + timedelta(days=30)).isoformat()
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await signed_in(page, world.stack, "/doctor", "dr-li")  # 泸县人民医院, H002
    await page.wait_for_selector("#consent-category option", state="attached")
    await open_panel(page)
    assert "暂无记录" in await page.inner_text("#consent-list")
    await page.select_option("#consent-category", "HIV")
    await page.fill("#consent-evidence", "FORM-H002-1")
    await page.fill("#consent-expires", until)
    await page.click("#consent-record")
    await page.wait_for_selector("#consent-error:not(:empty)")
    refusal = await page.inner_text("#consent-error")
    assert "本院没有该患者的结果" in refusal and "404" in refusal, refusal
    assert "mrb holds no results of this patient from your hospital" in refusal
    assert await page.locator("#consent-list tr.consent-row").count() == 0
    assert await page.inner_text("#consent-note") == ""
    await assert_accessible(page, context="#consent")  # the refusal shown
    assert errors == []
    visited.assert_clean(f.PATIENT_A)

    async with world.stack.container.sessions() as s:
        changes = (
            await s.execute(
                select(audit_event).where(
                    audit_event.c.action == "consent.record", audit_event.c.actor == "dr-li"
                )
            )
        ).all()
    assert changes == []  # refused before anything was recorded
