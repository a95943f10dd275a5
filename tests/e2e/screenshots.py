"""Screenshots of the web pages, taken by their browser tests at the state worth showing.

They go to $MRB_TEST_ARTIFACTS when it is set (`make screenshots` sets it to
docs/screenshots, the README's pictures), else to a folder beside the test's data, outside
the repository. A full-page picture heavier than MAX_BYTES is retaken at the viewport."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

WIDTH = 1280
MAX_BYTES = 400_000


def folder(data_dir: Path | str) -> Path:
    """Where screenshots go: $MRB_TEST_ARTIFACTS, else `screenshots` beside `data_dir`."""
    chosen = Path(os.environ.get("MRB_TEST_ARTIFACTS") or Path(data_dir).parent / "screenshots")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


async def screenshot(
    target: Any,
    data_dir: Path | str,
    name: str,
    *,
    full_page: bool = False,
    height: int = 800,
    top: str | None = None,
) -> Path:
    """`target` (a Playwright Page, 1280 wide, from its top or scrolled to put the element
    `top` at the top; or a Locator for one element) as `name`.png."""
    path = folder(data_dir) / f"{name}.png"
    if not hasattr(target, "set_viewport_size"):  # an element
        await target.screenshot(path=str(path))
        return path
    await target.set_viewport_size({"width": WIDTH, "height": height})
    if top is None:
        await target.evaluate("window.scrollTo(0, 0)")
    else:
        await target.eval_on_selector(top, "e => e.scrollIntoView({ block: 'start' })")
    await target.screenshot(path=str(path), full_page=full_page)
    if full_page and path.stat().st_size > MAX_BYTES:
        await target.screenshot(path=str(path))
    return path
