"""The finance and admin pages in headless Chromium, on one stack for the module.

Finance: hospital names (never bare codes), both sides of a recognition (what a hospital
saved by recognising others' results, and what its results saved elsewhere), declines by
reason in Chinese, reversals, the medical-insurance fund's and the patient's shares (the
demo region 5105 gives lab items an illustrative 0.70), CSV downloads with a UTF-8
byte-order mark, Excel (.xlsx) downloads, and the regulator's monthly report for
platform-finance. Admin: hospitals, QC certifications with
expiry warnings, a platform-admin deciding an identity review item, and a doctor who
sees no admin data (the API's 403). Every link a page renders answers 200.

The ledger: H001 (成都市第一人民医院) issued two blood counts that a doctor of H002
(泸州市人民医院) recognised (¥5.40 each at a level-2 hospital) — one later withdrawn, so
reversed — and a platelet count H002 declined for a key decision."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import SHANGHAI, Order
from broker.domain.registry import Certification, CertifyingBody
from broker.runtime import Stack, running_stack
from broker.services import identity_review
from broker.services import users as user_service
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer, free_port, seed_hospitals
from tests.e2e.accessibility import ADMIN_PAGE, assert_accessible
from tests.e2e.conftest import CHROMIUM
from tests.e2e.screenshots import screenshot

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

PASSWORD = "correct horse battery"
SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)
PLATFORM_ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS)
CHENGDU, LUZHOU = "成都市第一人民医院", "泸州市人民医院"
LIS = "urn:mrb:hospital:H001:lab-code"
KEY_DECISION_ZH = "手术、输血等重大诊疗前需复查"
ACCOUNTS = {
    "fin-pf": (Role.PLATFORM_FINANCE, None),
    "fin-h001": (Role.FINANCE, "H001"),
    "adm-h001": (Role.ADMIN, "H001"),
    "sys-zhang": (Role.PLATFORM_ADMIN, None),
    "dr-li": (Role.DOCTOR, "H002"),
}


async def _index(stack: Stack, value: bytes, hospital: str = "H001") -> None:
    (p,) = await stack.container.ingest_service().process_batch([f.inbound(value, hospital)])
    assert p.outcome.value == "indexed", p.detail


def _local_codes_only() -> bytes:
    """A report of H001 whose observation carries only its LIS's own code (unmapped)."""
    obs = f.observation("hb", "unused", 13.1)
    obs["code"] = {"coding": [{"system": LIS, "code": "XHB", "display": "血红蛋白(院内)"}]}
    report: dict[str, Any] = json.loads(f.lab_bundle(accession="L-1"))["entry"][1]["resource"]
    report["code"] = {"coding": [{"system": LIS, "code": "XCBC", "display": "血常规"}]}
    report["result"] = [{"reference": "urn:uuid:hb"}]
    pat = f.patient(national_id=None, mrn="MRN-LIS", pid="p-lis")
    return f.bundle([("urn:uuid:patient", pat), ("urn:uuid:dr", report), ("urn:uuid:hb", obs)])


def _person(mrn: str, given: str) -> dict[str, Any]:
    """A Patient known by its hospital's MRN only, with demographics (a review candidate)."""
    return f.patient(national_id=None, mrn=mrn, pid=f"p-{mrn}") | {
        "name": [{"use": "official", "family": "王", "given": [given]}],
        "gender": "female",
        "birthDate": "1980-02-02",
        "telecom": [{"system": "phone", "value": "13900139000"}],
    }


async def _recognise(stack: Stack, patient: str, *, decline_platelets: bool) -> None:
    c = stack.container
    doctor = Actor("dr-li", Role.DOCTOR, "H002")
    orders = [Order("http://loinc.org", "718-7")]
    if decline_platelets:
        orders.append(Order("http://loinc.org", "777-3"))
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, patient, "H002", datetime.now(UTC), tuple(orders)),
        doctor,
    )
    outcomes = [OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED))]
    if decline_platelets:
        declined = OutcomeInput(OutcomeKind.DECLINED, DeclineReason.KEY_DECISION)
        outcomes.append(OutcomeRequest(1, declined))
    await record_outcomes(c.outcome_uow(), c.reference_rules().catalog, answer.check_id,
                          outcomes, doctor)  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("pages")
    settings = Settings(
        data_dir=tmp / "data",
        http_port=free_port(),
        metrics_port=0,
        create_keys=True,
        rate_limit_per_minute=0,
        rate_limit_per_address_per_minute=0,
    )
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as s:
        c = s.container
        await seed_hospitals(
            c,
            hospitals.Hospital("H001", CHENGDU, "510104", "3", grade="甲"),
            hospitals.Hospital("H002", LUZHOU, "510502", "2", grade="甲"),
        )
        today = datetime.now(SHANGHAI).date()  # the day the pages count expiry from
        async with c.sessions() as session, session.begin():
            for hospital, scope, valid_to in (
                ("H001", "HEMATOLOGY", date(2030, 12, 31)),
                ("H002", "HEMATOLOGY", today + timedelta(days=10)),  # expiring
                ("H002", "URINALYSIS", today - timedelta(days=3)),  # expired
            ):
                cert = Certification(
                    hospital,
                    scope,
                    CertifyingBody.PROVINCIAL_EQA,
                    today - timedelta(days=300),
                    valid_to,
                )
                await hospitals.certify(session, cert, reference=None)
        taken = datetime.now(SHANGHAI).replace(microsecond=0) - timedelta(hours=3)
        when = taken.isoformat()
        a = f.patient(f.PATIENT_A, mrn="MRN-A", pid="pa")
        b = f.patient(f.PATIENT_B, mrn="MRN-B", pid="pb")
        await _index(s, f.lab_bundle(accession="ACC-A", effective=when, last_updated=None, pat=a))
        await _index(s, f.lab_bundle(accession="ACC-B", effective=when, last_updated=None, pat=b))
        await _recognise(s, f.PATIENT_A, decline_platelets=True)
        await _recognise(s, f.PATIENT_B, decline_platelets=False)
        withdrawn = f.lab_bundle(
            accession="ACC-B",
            status="entered-in-error",
            effective=when,
            last_updated=(taken + timedelta(hours=1)).isoformat(),
            version="2",
            pat=b,
        )
        await _index(s, withdrawn)  # the second saving is reversed
        await _index(s, _local_codes_only())  # on the unmapped-code worklist
        # A near duplicate across hospitals waits in the identity review queue.
        await _index(s, f.lab_bundle(accession="ACC-301", pat=_person("MRN-301", "晓明")))
        await _index(s, f.lab_bundle(accession="ACC-377", pat=_person("MRN-377", "晓鸣")), "H002")
        for username, (role, home) in ACCOUNTS.items():
            await user_service.add_account(
                c.web_uow(),
                SECURITY,
                username=username,
                password=PASSWORD,
                role=role,
                hospital=home,
            )
        yield s


async def _page(browser: Any, stack: Stack, username: str, path: str = "/login") -> Any:
    """A fresh context signed in as `username` from `path`; page errors are collected."""
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(f"{stack.api_url}{path}")
    await page.wait_for_selector("#login:not([hidden])")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    return page


async def _fetch(page: Any, path: str) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        """async (path) => {
            const r = await fetch(path, { credentials: "same-origin" });
            return { status: r.status, body: await r.text() };
        }""",
        path,
    )
    return result


async def _links_resolve(page: Any) -> list[str]:
    """Every link the page renders, fetched with the page's session: all answer 200."""
    hrefs: list[str] = await page.eval_on_selector_all(
        "a[href]", "links => links.map((a) => a.href)"
    )
    for href in hrefs:
        assert "#" not in href and "token" not in href.lower(), href
        assert (await _fetch(page, href))["status"] == 200, href
    return hrefs


async def _audited(stack: Stack, actor: str) -> set[str]:
    """What the audit trail recorded of this person's actions."""
    async with stack.container.sessions() as s:
        rows = await s.execute(select(audit_event.c.action).where(audit_event.c.actor == actor))
        return {r[0] for r in rows}


async def _download(page: Any, selector: str) -> str:
    async with page.expect_download() as info:
        await page.click(selector)
    download = await info.value
    data = Path(await download.path()).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "no UTF-8 byte-order mark: Excel garbles Chinese"
    return data[3:].decode("utf-8")


async def _download_xlsx(page: Any, selector: str) -> Any:
    """The workbook a link downloads, opened with openpyxl."""
    openpyxl = pytest.importorskip("openpyxl")
    async with page.expect_download() as info:
        await page.click(selector)
    download = await info.value
    assert download.suggested_filename.endswith(".xlsx")
    return openpyxl.load_workbook(io.BytesIO(Path(await download.path()).read_bytes()))


async def test_decline_reasons_have_chinese_labels_and_the_unknown_one_on_request(
    stack: Stack,
) -> None:
    headers = await bearer(stack.container, "finance", "H001")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as http:
        ordering = (await http.get("/api/v1/recognition/decline-reasons")).json()
        report = await http.get("/api/v1/recognition/decline-reasons?include_unknown=true")
    assert "UNKNOWN" not in {r["code"] for r in ordering}  # not offered to doctors
    labels = {r["code"]: r["display"]["zh"] for r in report.json()}
    assert labels["UNKNOWN"] == "未说明理由" and labels["KEY_DECISION"] == KEY_DECISION_ZH
    assert all(labels.values())


async def test_platform_finance_sees_names_both_sides_declines_and_downloads(
    stack: Stack, browser: Any
) -> None:
    page = await _page(browser, stack, "fin-pf")
    await page.wait_for_url(f"{stack.api_url}/finance")
    await page.wait_for_selector("#by-source rect.bar")
    assert LUZHOU in await page.inner_text("#by-hospital")  # names, not codes
    assert "¥5.40" in await page.inner_text("#by-hospital")  # ¥10.80 saved, ¥5.40 reversed
    by_source = await page.inner_text("#by-source")
    assert CHENGDU in by_source and "¥5.40" in by_source
    assert "血红蛋白" in await page.inner_text("#by-item")
    assert "检验" in await page.inner_text("#by-category")
    assert KEY_DECISION_ZH in await page.inner_text("#by-reason")
    assert await page.locator("#by-month rect.bar").count() >= 1
    totals = await page.inner_text("#totals")
    assert "2 次互认" in totals and "冲销 reversed ¥5.40 (1)" in totals
    row = await page.inner_text("#adjustments tr[data-key='H002']")
    assert LUZHOU in row and "¥10.80" in row and "¥5.40" in row
    # Net ¥5.40 split at 0.70: the fund ¥3.78, the patient ¥1.62 (5105.yaml, illustrative).
    assert "基金支付 fund ¥3.78" in totals and "个人自付 patient ¥1.62" in totals
    fund = page.locator("#adjustments tr[data-key='H002'] td.fund")
    assert await fund.inner_text() == "¥3.78"
    patient = page.locator("#adjustments tr[data-key='H002'] td.patient")
    assert await patient.inner_text() == "¥1.62"
    await page.wait_for_selector("#regulator:not([hidden]) #regulator-hospitals tr[data-key]")
    await screenshot(page, stack.container.settings.data_dir, "finance", height=1500)

    # The source side of one hospital: what H001's results saved at H002.
    await page.select_option("#hospital", "H001")
    await page.click("#range button[type=submit]")
    await page.wait_for_selector("#source-totals:has-text('为他院节省 ¥10.80')")
    assert "净 ¥5.40" in await page.inner_text("#source-totals")
    assert LUZHOU in await page.inner_text("#by-benefit")
    assert "0 次互认" in await page.inner_text("#totals")  # H001 itself recognised nothing
    # Nothing booked on H001's side: no ratio was given, so no split is claimed (not ¥0.00).
    assert "基金支付 fund 未给出 / not given" in await page.inner_text("#totals")

    csv = await _download(page, "#csv-links a[data-file$='by-hospital.csv']")
    assert csv.splitlines()[0].startswith("hospital,recognitions,saved")
    enabled = await _download(page, "#csv-links a[data-file$='enabled-elsewhere.csv']")
    assert "H002,2,10.80,1,5.40,5.40,3.78,1.62,0.00" in enabled
    book = await _download_xlsx(page, "#csv-links a[data-file$='enabled-elsewhere.xlsx']")
    sheet = book.worksheets[0]
    assert sheet.freeze_panes == "A3"
    header_zh = [c.value for c in sheet[1]]
    header = [c.value for c in sheet[2]]
    assert header_zh[:3] == ["医院", "互认次数", "节省金额(元)"] and header[0] == "hospital"
    h002 = dict(zip(header, sheet[3], strict=True))
    assert h002["hospital"].value == "H002" and h002["recognitions"].value == 2
    assert h002["saved"].value == 10.8 and h002["saved"].number_format == "#,##0.00"
    assert (h002["fund_share"].value, h002["patient_share"].value) == (3.78, 1.62)

    # The regulator's report for this month, with the source side per hospital.
    await page.wait_for_selector("#regulator:not([hidden]) #regulator-hospitals tr[data-key]")
    h001 = await page.inner_text("#regulator-hospitals tr[data-key='H001']")
    assert CHENGDU in h001 and "¥5.40 (2 次)" in h001
    assert LUZHOU in await page.inner_text("#regulator-hospitals tr[data-key='H002']")
    regulator = await _download(page, "#regulator-csv")
    assert CHENGDU in regulator and "net_saved_for_others" in regulator.splitlines()[0]
    h002_row = await page.inner_text("#regulator-hospitals tr[data-key='H002']")
    assert "¥3.78" in h002_row and "¥1.62" in h002_row
    book = await _download_xlsx(page, "#regulator-xlsx")
    report, certs = book.worksheets[0], book.worksheets[1]
    columns = [c.value for c in report[2]]
    rows = {r[1].value: r for r in report.iter_rows(min_row=3) if r[0].value == "hospital"}
    assert rows["H001"][columns.index("name")].value == CHENGDU
    assert rows["H002"][columns.index("fund_share")].value == 3.78
    assert [c.value for c in certs[2]][3:] == ["valid_from", "valid_to"]
    assert isinstance(certs["D3"].value, datetime)  # a date cell, not text
    hrefs = await _links_resolve(page)
    assert any("/api/v1/reports/regulator" in h for h in hrefs)
    await assert_accessible(page)  # charts, tables, downloads and the regulator's report
    assert page.errors == []
    await page.context.close()


async def test_the_xlsx_is_negotiated_by_accept_or_format_and_named(stack: Stack) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    sheet_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    headers = await bearer(stack.container, "platform-finance", ALL_HOSPITALS)
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as http:
        by_accept = await http.get(
            "/api/v1/savings?group_by=hospital", headers={"Accept": sheet_type}
        )
        as_json = (await http.get("/api/v1/savings?group_by=hospital")).json()
        month = datetime.now(SHANGHAI).strftime("%Y-%m")
        regulator = await http.get(f"/api/v1/reports/regulator?month={month}&format=xlsx")
    assert by_accept.status_code == 200 and by_accept.headers["content-type"] == sheet_type
    disposition = by_accept.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "by-hospital" in disposition
    assert ".xlsx" in disposition
    sheet = openpyxl.load_workbook(io.BytesIO(by_accept.content)).worksheets[0]
    keys = [c.value for c in sheet[2]]
    for group, row in zip(as_json["groups"], sheet.iter_rows(min_row=3), strict=False):
        cells = dict(zip(keys, row, strict=True))
        assert cells["hospital"].value == group["key"]
        assert f"{cells['net_saved'].value:.2f}" == group["net_saved"]
        assert f"{cells['fund_share'].value:.2f}" == group["fund_share"]
    assert regulator.headers["content-type"] == sheet_type
    assert f"mrb-regulator-report-{month}.xlsx" in regulator.headers["content-disposition"]


async def test_hospital_finance_sees_its_own_hospital_and_no_regulator_report(
    stack: Stack, browser: Any
) -> None:
    page = await _page(browser, stack, "fin-h001")
    await page.wait_for_url(f"{stack.api_url}/finance")
    await page.wait_for_selector("#source-totals:has-text('为他院节省 ¥10.80')")
    assert await page.is_disabled("#hospital")
    assert await page.input_value("#hospital") == "H001"
    assert LUZHOU in await page.inner_text("#by-benefit")
    assert await page.is_hidden("#regulator")
    report = await _fetch(page, "/api/v1/reports/regulator?month=2026-05")
    assert report["status"] == 403  # the API's guard, not only the page's
    await _links_resolve(page)
    assert page.errors == []
    await page.context.close()


async def test_hospital_admin_sees_hospitals_and_certification_warnings(
    stack: Stack, browser: Any
) -> None:
    issued = await stack.container.issue_token("dr-wu", Role.DOCTOR, "H001", by="tests")
    page = await _page(browser, stack, "adm-h001")
    await page.wait_for_url(f"{stack.api_url}/admin")
    await page.wait_for_selector("#hospitals tr[data-hospital='H002']")
    hospitals_text = await page.inner_text("#hospitals")
    assert CHENGDU in hospitals_text and LUZHOU in hospitals_text and "2级甲" in hospitals_text
    keys = await page.inner_text("#hospitals tr[data-hospital='H001'] td.keys")
    assert f.key_id("H001") in keys and "自 since" in keys
    warnings = await page.inner_text("#cert-warnings")
    assert "1 项认证将在 30 天内到期，1 项已过期" in warnings
    expiring = await page.inner_text("#certs tr.cert.expiring")
    assert LUZHOU in expiring and "10 天后到期" in expiring
    assert "已过期" in await page.inner_text("#certs tr.cert.expired")
    assert await page.is_visible("#unmapped-section") and await page.is_visible("#tokens-section")
    assert await page.is_hidden("#identity-section")  # platform-admin's alone
    await page.wait_for_selector("#catalog tr[data-code='LAB-HGB']")
    assert await page.is_hidden("#hospital-form") and await page.is_hidden("#certify-form")
    # A token of the hospital's own, revoked from the page.
    await page.wait_for_selector(f"#tokens tr[data-jti='{issued.jti}']")
    token = f"#tokens tr[data-jti='{issued.jti}']"
    await page.fill(f"{token} input", "离职 left the hospital")
    await page.click(f"{token} button[type=submit]")
    await page.wait_for_selector("#status:has-text('已吊销')")
    await page.wait_for_selector(token, state="detached")  # live only
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        refused = await http.get(
            "/api/v1/notifications", headers={"Authorization": f"Bearer {issued.token}"}
        )
    assert refused.status_code == 401
    # The worklist: map H001's local code, and it leaves the list.
    row = "#unmapped tr[data-code='XHB']"
    assert "血红蛋白(院内)" in await page.inner_text(row)
    await page.fill(f"{row} input", "LAB-HGB")
    await page.click(f"{row} button[type=submit]")
    await page.wait_for_selector("#status:has-text('已映射 Mapped XHB → LAB-HGB')")
    await page.wait_for_selector(row, state="detached")
    assert await page.locator("#unmapped tr[data-code='XCBC']").count() == 1
    await _links_resolve(page)
    await assert_accessible(page, context=ADMIN_PAGE)  # registry, certs, worklist, tokens
    # The top of a long page (the catalog runs to hundreds of rows).
    await screenshot(page, stack.container.settings.data_dir, "admin", height=1600)
    assert page.errors == []
    await page.context.close()
    assert {"token.revoke", "mapping.add"} <= await _audited(stack, "adm-h001")


async def test_platform_admin_confirms_an_identity_review_item(stack: Stack, browser: Any) -> None:
    uow = stack.container.identity_uow
    before = await identity_review.list_reviews(uow(), PLATFORM_ADMIN)
    assert before, "the fixture's near duplicate should be waiting for review"
    page = await _page(browser, stack, "sys-zhang")
    await page.wait_for_url(f"{stack.api_url}/admin")
    first = before[0]["review_id"]
    row = f"#reviews tr.review[data-review='{first}']"
    await page.wait_for_selector(row)
    assert "birth_date" in await page.inner_text(row)  # which fields agreed, and how well
    assert "王" not in await page.inner_text("#reviews")  # levels and weights, no names
    await assert_accessible(page, context=ADMIN_PAGE)  # registry forms, identity reviews
    await page.click(f"{row} button.confirm")
    await page.wait_for_selector("#status:has-text('已确认')")
    await page.wait_for_selector(row, state="detached")
    after = await identity_review.list_reviews(uow(), PLATFORM_ADMIN)
    assert first not in {r["review_id"] for r in after}
    assert await page.is_visible("#unmapped-section") and await page.is_hidden("#tokens-section")
    # The registry: platform-admin puts H002 into an alliance.
    await page.click("#hospitals tr[data-hospital='H002'] button.edit")
    assert await page.input_value("#h-name") == LUZHOU
    await page.fill("#h-alliances", "LZ-YLT-1, LZ-YLT-2")
    await page.click("#hospital-form button[type=submit]")
    await page.wait_for_selector("#status:has-text('已保存')")
    await page.wait_for_selector(
        "#hospitals tr[data-hospital='H002']:has-text('LZ-YLT-1、LZ-YLT-2')"
    )
    await _links_resolve(page)
    assert page.errors == []
    await page.context.close()
    done = {"identity.review.confirm", "registry.hospital.replace"}
    assert done <= await _audited(stack, "sys-zhang")


async def test_a_doctor_opening_admin_sees_no_admin_data(stack: Stack, browser: Any) -> None:
    page = await _page(browser, stack, "dr-li", "/admin")
    await page.wait_for_selector("#app:not([hidden])")
    await page.wait_for_selector("#no-access:not([hidden])")
    for section in ("hospitals", "certs", "unmapped", "tokens", "identity", "catalog"):
        assert await page.is_hidden(f"#{section}-section")
    assert await page.locator("#hospitals tbody tr").count() == 0
    for path in (
        "/api/v1/admin/identity/reviews",
        "/api/v1/admin/mappings/unmapped",
        "/api/v1/admin/tokens",
    ):
        assert (await _fetch(page, path))["status"] == 403, path
    await _links_resolve(page)
    assert page.errors == []
    await page.context.close()


async def test_the_login_page_links_resolve(stack: Stack, browser: Any) -> None:
    page = await _page(browser, stack, "fin-pf", "/admin")  # no admin sections: stays here
    await page.wait_for_selector("#no-access:not([hidden])")
    await page.goto(f"{stack.api_url}/login")
    await page.wait_for_url(f"{stack.api_url}/finance")  # signed in: sent to its page
    context = await browser.new_context()
    anonymous = await context.new_page()
    await anonymous.goto(f"{stack.api_url}/login")
    hrefs = await anonymous.eval_on_selector_all("a[href]", "ls => ls.map((a) => a.href)")
    assert {h.removeprefix(stack.api_url) for h in hrefs} >= {"/doctor", "/finance", "/admin"}
    for href in hrefs:
        assert (await _fetch(anonymous, href))["status"] == 200, href
    await assert_accessible(anonymous)  # the login page
    await screenshot(anonymous, stack.container.settings.data_dir, "login", height=480)
    await context.close()
    await page.context.close()
