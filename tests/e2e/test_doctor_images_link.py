"""The doctor's page links a study's images (issue #18): "查看影像 Open images".

A chest CT from 泸州市人民医院 sent with an IHE IID viewer Endpoint, and an MR sent without
one. The images live outside mrb, in the hospital's PACS: a tiny local HTTP server stands
in for it. The check's candidate and the timeline show the link for the CT only, opening
in a new tab with rel="noopener noreferrer"; the tab loads, and every link answers 200."""

from __future__ import annotations

import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from broker.domain.actors import Role
from broker.domain.registry import Certification, CertifyingBody
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import free_port, seed_hospitals
from tests.e2e.conftest import CHROMIUM
from tests.e2e.test_web_pages import Visited, account, index, signed_in
from tests.unit.test_imaging_endpoints import UID, endpoint, imaging_with_endpoints

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

ISSUER = hospitals.Hospital("H001", "泸州市人民医院", "510502", "3")
ORDERING = hospitals.Hospital("H002", "泸县人民医院", "510502", "2")


@dataclass
class Pacs:
    """A stand-in for a hospital's PACS viewer: every GET is 200 with a small page."""

    base: str
    paths: list[str]


@contextmanager
def stand_in_pacs() -> Iterator[Pacs]:
    paths: list[str] = []

    class Viewer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = b"<!doctype html><title>PACS viewer</title><p>images</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Viewer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Pacs(f"http://127.0.0.1:{server.server_address[1]}", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def ct_with_viewer(pacs: Pacs, started: str) -> bytes:
    """f.imaging_bundle (chest CT, study UID 1.2.3.4) with the PACS's IID viewer."""
    viewer = endpoint(f"{pacs.base}/viewer", "ihe-iid", eid="viewer")
    return imaging_with_endpoints(bundled=[viewer], started=started)


@dataclass
class World:
    stack: Stack
    pacs: Pacs
    ct_day: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("images")
    settings = Settings(
        data_dir=tmp / "data", http_port=free_port(), metrics_port=0, create_keys=True
    )
    with stand_in_pacs() as pacs:
        async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
            c = stack.container
            await seed_hospitals(c, ISSUER, ORDERING)
            async with c.sessions() as s, s.begin():
                for scope in ("CT", "MR"):
                    cert = Certification(
                        "H001",
                        scope,
                        CertifyingBody.PROVINCIAL_IMAGING_QC,
                        date(2025, 1, 1),
                        date(2035, 12, 31),
                    )
                    await hospitals.certify(s, cert, reference=None)
            ct_day = (date.today() - timedelta(days=5)).isoformat()
            await index(stack, ct_with_viewer(pacs, f"{ct_day}T09:00:00+08:00"))
            mr = f.imaging_bundle(
                uid="1.2.3.9", modality="MR", site="12738006", started=f"{ct_day}T10:00:00+08:00"
            )
            await index(stack, mr)
            await account(stack, "dr-wang", Role.DOCTOR, "H002")
            yield World(stack, pacs, ct_day)


async def test_the_candidate_and_the_timeline_link_the_images(world: World, browser: Any) -> None:
    link = f"{world.pacs.base}/viewer?requestType=STUDY&studyUID={UID}"
    page = await browser.new_page()
    visited = Visited(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await signed_in(page, world.stack, "/doctor", "dr-wang")
    await page.wait_for_selector("#id-system option", state="attached")
    await page.fill("#item-search", "胸部CT平扫")
    match = page.locator("#item-results li.catalog-item", has_text="胸部CT平扫").first
    await match.locator("button.add").click()
    await page.wait_for_selector("#picked li.picked-item")
    await page.fill("#patient", f.PATIENT_A)
    await page.click("#run-check")
    await page.wait_for_selector("#answer:not([hidden])")
    await page.wait_for_selector("#timeline:not([hidden])")

    # The check's candidate: the study's report link, and its images.
    candidate = page.locator("tr[data-item='0'] td.candidate a.images-link")
    assert await candidate.count() == 1, await page.inner_text("#answer")
    assert await candidate.inner_text() == "查看影像 Open images"
    assert await candidate.get_attribute("href") == link
    assert await candidate.get_attribute("target") == "_blank"
    assert await candidate.get_attribute("rel") == "noopener noreferrer"

    # The timeline: the CT (with an endpoint) links its images, the MR does not.
    rows = page.locator("#timeline tr.timeline-row[data-type='ImagingStudy']")
    assert await rows.count() == 2
    shown = {}
    for row in await rows.all():
        text = await row.inner_text()
        shown["CT" if "CT" in text else "MR"] = row.locator("a.images-link")
    assert await shown["CT"].count() == 1 and await shown["MR"].count() == 0
    assert await shown["CT"].get_attribute("href") == link
    assert await shown["CT"].get_attribute("rel") == "noopener noreferrer"

    # Clicking opens the PACS in a new tab, which loads.
    async with page.context.expect_page() as opened:
        await candidate.click()
    tab = await opened.value
    await tab.wait_for_load_state()
    assert tab.url == link and "images" in await tab.inner_text("body")
    assert await tab.evaluate("window.opener") is None
    await tab.close()

    # Every link the page shows answers 200 (the images from the stand-in PACS).
    hrefs: list[str] = await page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for href in hrefs:
        response = await page.context.request.get(href)
        assert response.status == 200, (href, response.status)
    assert link in hrefs
    assert any(p.startswith("/viewer?requestType=STUDY") for p in world.pacs.paths)
    assert errors == []
    visited.assert_clean(f.PATIENT_A)
