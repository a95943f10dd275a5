"""The web pages' own files (broker/web/static): everything they load is mrb's own (no CDN,
no other origin), each page declares its language, and the axe-core the browser tests run
is the vendored copy its README describes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from broker.api.routes.pages import STATIC

VENDOR = Path(__file__).resolve().parents[1] / "e2e" / "vendor" / "axe-core"
PAGES = sorted(STATIC.glob("*.html"))
# src= and href= of the elements that load something: scripts, styles, images, frames.
LOADS = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=\"([^\"]*)\"", re.I)


def test_there_are_pages() -> None:
    assert {p.name for p in PAGES} >= {"login.html", "doctor.html", "finance.html"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_loads_only_its_own_static_files(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    loaded = LOADS.findall(text)
    assert loaded, page.name
    for url in loaded:
        assert url.startswith("/static/"), (page.name, url)
        assert (STATIC / url.removeprefix("/static/")).is_file(), (page.name, url)
    assert "//" not in "".join(loaded)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_says_it_is_chinese(page: Path) -> None:
    assert '<html lang="zh-CN">' in page.read_text(encoding="utf-8")


def test_scripts_fetch_no_other_origin() -> None:
    for script in STATIC.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert not re.search(r"fetch\(\s*[\"'`]https?:", text), script.name
        assert "cdn" not in text.lower(), script.name


def test_the_vendored_axe_core_is_the_one_described() -> None:
    digest = hashlib.sha256((VENDOR / "axe.min.js").read_bytes()).hexdigest()
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert digest in readme and "4.10.3" in readme
    assert (VENDOR / "LICENSE").read_text(encoding="utf-8").startswith("Mozilla Public License")
