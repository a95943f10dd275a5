"""deploy/prometheus/alerts.yml: it parses, names only metrics mrb exports, and every
alert's runbook is a section of docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

import broker.observability  # noqa: F401  (defines, so registers, every broker metric)
from adapters.common.metrics import OutboxCollector

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS = REPO / "docs" / "operations.md"
METRIC = re.compile(r"\b(mrb_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> set[str]:
    """Every series name mrb's processes and adapters expose (with histogram and counter
    suffixes), from prometheus_client's registry and the adapters' outbox collector."""
    names = {n for n in REGISTRY._names_to_collectors if n.startswith("mrb_")}
    for family in OutboxCollector(Path("unused")).describe():
        names |= {family.name, *(family.name + s for s in SUFFIXES)}
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_the_rules_parse_and_every_alert_is_complete() -> None:
    alerts = rules()
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names)) and len(names) >= 15
    for rule in alerts:
        assert rule["expr"].strip(), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]


def test_every_expression_names_only_metrics_mrb_exports() -> None:
    known = exported()
    unknown = {
        (rule["alert"], name)
        for rule in rules()
        for name in METRIC.findall(rule["expr"])
        if name not in known
    }
    assert not unknown, unknown
    used = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    # What the reliability issue asks to watch is covered.
    for name in (
        "mrb_consumer_lag",
        "mrb_messages_total",
        "mrb_results_rejected_total",
        "mrb_ingest_paused",
        "mrb_outbox_oldest_pending_seconds",
        "mrb_http_request_seconds_count",
        "mrb_http_request_seconds_bucket",
        "mrb_audit_last_seal_timestamp_seconds",
        "mrb_break_glass_total",
        "mrb_break_glass_reads_total",  # issue "Patient rights": every break-glass read
    ):
        assert name in used, name


def test_every_runbook_is_a_section_of_the_operations_guide() -> None:
    sections = anchors(OPERATIONS.read_text())
    for rule in rules():
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md", rule["alert"]
        assert anchor in sections, (rule["alert"], anchor)


def test_a_break_glass_read_alerts_the_security_administrator_at_once() -> None:
    """Issue "Patient rights": every read beyond consent or opt-out is reviewed, so the
    first one in five minutes fires (no `for`), labelled for the security team."""
    (rule,) = [r for r in rules() if "mrb_break_glass_reads_total" in r["expr"]]
    assert re.fullmatch(
        r"sum by \(channel\) \(increase\(mrb_break_glass_reads_total\[5m\]\)\) > 0",
        rule["expr"].strip(),
    )
    assert "for" not in rule
    assert rule["labels"] == {"severity": "warning", "team": "security"}
    assert "break-glass" in rule["annotations"]["summary"]
