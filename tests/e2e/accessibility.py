"""Accessibility of the web pages: axe-core, vendored (tests/e2e/vendor/axe-core, no CDN),
run inside the page under test by the browser tests.

`await assert_accessible(page)` fails on every serious or critical violation of the
WCAG 2.x A/AA rules and axe's best practices, naming each rule, what it asks and the
elements at fault. The pages' Content-Security-Policy (`default-src 'self'`) refuses
inline and injected <script> elements, so axe's source is evaluated through the DevTools
protocol (`page.evaluate`), which that policy does not govern; the app's policy is left
as it is."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
FAILING = ("serious", "critical")
# The admin page lists the whole item catalog (about 300 rows alike): its first 20 rows
# stand for the rest, and axe runs in 2 s instead of 11.
ADMIN_PAGE: dict[str, Any] = {"exclude": [["#catalog tbody tr:nth-child(n+21)"]]}

_RUN = """async ([context, tags]) => {
    const results = await axe.run(context || document, {
        runOnly: { type: "tag", values: tags },
        resultTypes: ["violations"],
    });
    return results.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help,
        targets: v.nodes.map((n) => ({ impact: n.impact, target: n.target.join(" "),
                                      summary: n.failureSummary || "" })),
    }));
}"""


@cache
def axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


async def axe_violations(page: Any, *, context: str | dict[str, Any] | None = None) -> list[Any]:
    """axe's violations (every impact) in `page` (a Playwright Page or Frame), within
    `context` (a selector, or axe's include/exclude object; the whole document if None)."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(axe_source())  # an expression, not a <script>: no CSP change
    violations: list[Any] = await page.evaluate(_RUN, [context, TAGS])
    return violations


async def assert_accessible(page: Any, *, context: str | dict[str, Any] | None = None) -> None:
    """No serious or critical axe-core violation in `page` (Page or Frame) within `context`."""
    every = await axe_violations(page, context=context)
    found = [v for v in every if v["impact"] in FAILING]
    if found:
        lines = [f"axe-core: {len(found)} serious or critical violation(s) on {page.url}"]
        for v in found:
            lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
            for node in v["targets"][:10]:
                why = " ".join(line.strip() for line in node["summary"].splitlines()[1:])
                lines.append(f"    {node['target']}: {why}")
            if len(v["targets"]) > 10:
                lines.append(f"    … and {len(v['targets']) - 10} more")
        raise AssertionError("\n".join(lines))
