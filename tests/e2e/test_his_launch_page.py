"""The HIS launch in headless Chromium: a HIS page on another site (http://localhost)
embeds mrb's launch (http://127.0.0.1) in an iframe; the doctor recognises the item and
the HIS page receives the decision by postMessage, from mrb's origin only."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec

from broker.cdshooks import clients as cds_clients
from broker.domain.registry import Certification, CertifyingBody
from broker.runtime import Stack, running_stack
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.cds_store import SqlCdsClients
from tests import factories as f
from tests.conftest import free_port, seed_hospitals
from tests.e2e.accessibility import assert_accessible
from tests.e2e.conftest import CHROMIUM
from tests.e2e.screenshots import screenshot
from tests.e2e.test_web_pages import index

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]
playwright_api = pytest.importorskip("playwright.async_api")
if not shutil.which(CHROMIUM):
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)", allow_module_level=True)

ISS = "https://his.h002.example.cn/"
KEY = ec.generate_private_key(ec.SECP256R1())
HIS_PORT = free_port()
HIS_ORIGIN = f"http://localhost:{HIS_PORT}"
PARENT = """<!doctype html><html><body>
<iframe id="mrb" src="%s" width="800" height="600"></iframe>
<script>
window.received = [];
window.addEventListener("message", (e) => {
  if (e.origin !== "%s") return;
  window.received.push(e.data);
});
</script></body></html>"""


def public_jwk() -> dict[str, object]:
    data: dict[str, object] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    return data | {"kid": "his-1", "use": "sig"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("his-launch")
    settings = Settings(
        data_dir=tmp / "data",
        http_port=free_port(),
        metrics_port=0,
        create_keys=True,
        cds_allow_http_loopback=True,  # the HIS page is served on http://localhost
    )
    async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
        c = stack.container
        await seed_hospitals(
            c,
            hospitals.Hospital("H001", "泸州市人民医院", "510502", "3"),
            hospitals.Hospital("H002", "泸县人民医院", "510502", "2"),
        )
        async with c.sessions() as s, s.begin():
            cert = Certification(
                "H001",
                "HEMATOLOGY",
                CertifyingBody.PROVINCIAL_EQA,
                date(2025, 1, 1),
                date(2035, 12, 31),
            )
            await hospitals.certify(s, cert, reference=None)
            await cds_clients.register_client(
                SqlCdsClients(s),
                ISS,
                "H002",
                jwks={"keys": [public_jwk()]},
                launch_origins=[HIS_ORIGIN],
                allow_http_loopback=c.settings.cds_allow_http_loopback,
            )
        today = date.today().isoformat()
        await index(stack, f.lab_bundle(effective=f"{today}T08:00:00+08:00", last_updated=None))
        yield stack


def launch_url(stack: Stack) -> str:
    now = int(time.time())
    base = stack.container.settings.resolved_public_base_url
    token = jwt.encode(
        {
            "iss": ISS,
            "aud": f"{base}launch",
            "iat": now,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
            "sub": "D0042",
            "hospital": "H002",
            "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
            "items": [{"system": "http://loinc.org", "code": "718-7"}],
        },
        KEY,
        algorithm="ES256",
        headers={"kid": "his-1", "typ": "JWT"},
    )
    return f"{base}launch?token={token}"


@pytest.fixture
def his_page(stack: Stack) -> Iterator[str]:
    """The HIS's own page, on another site, embedding the launch."""
    origin = stack.container.settings.resolved_public_base_url.rstrip("/")
    body = (PARENT % (launch_url(stack), origin)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", HIS_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{HIS_ORIGIN}/order"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_his_embeds_the_check_and_receives_the_decision(
    stack: Stack, his_page: str, browser: Any
) -> None:
    page = await browser.new_page()
    await page.goto(his_page)
    frame = page.frame_locator("#mrb")
    item = frame.locator("article.item").first
    await item.wait_for(timeout=15000)
    assert "可互认" in await item.inner_text()
    today = date.today().isoformat()
    assert f"{today} 08:00" in await item.inner_text()  # China Standard Time, not UTC
    launch = next(fr for fr in page.frames if fr != page.main_frame)
    await assert_accessible(launch)  # mrb's page inside the HIS's iframe
    await frame.locator("input[value=accepted]").first.check()
    data_dir = stack.container.settings.data_dir
    await screenshot(page.locator("#mrb"), data_dir, "launch")  # as the HIS shows it
    await frame.locator("#send").click()
    await page.wait_for_function("window.received.length > 0", timeout=15000)
    received = await page.evaluate("window.received")
    (message,) = received
    assert message["type"] == "mrb.decision" and message["check_id"]
    assert message["items"] == [
        {"code": "718-7", "decision": "RECOGNIZABLE", "outcome": "accepted"}
    ]
    inner = next(fr for fr in page.frames if fr != page.main_frame)
    assert inner.url.endswith("/launch/check")  # the token left the address bar
    assert "token" not in inner.url
