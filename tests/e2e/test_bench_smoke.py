"""`python -m benchmarks` at tiny sizes: it runs end to end (a real worker on Tansu, the
bulk load, the API and the load generator in their own processes) and its report has
the shape docs/performance.md relies on. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "MRB_BENCH_SIZES": "200",
    "MRB_BENCH_DATABASES": "sqlite",
    "MRB_BENCH_ROUNDS": "2",
    "MRB_BENCH_REQUESTS": "8",
    "MRB_BENCH_WARMUP": "2",
    "MRB_BENCH_INGEST_PATIENTS": "20",
    "MRB_BENCH_BIG_PATIENT": "30",
    "MRB_BENCH_CLI_RUNS": "1",
    "MRB_BENCH_SCALE_OUT": "0",  # several processes: same code paths, twice the start-ups
}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_bench_reports_every_figure_against_a_baseline(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    env = os.environ | TINY
    env |= {"MRB_BENCH_REPORT": str(report_file), "MRB_BENCH_WORK_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_file.read_text())

    figures = report["figures"]
    assert {f["section"] for f in figures} == {"ingest", "check", "cds-fhir", "cli"}
    for f in figures:
        assert len(f["rounds"]) >= 2, f["name"]
        assert len(f["baseline"]["rounds"]) >= 2, f["name"]
        assert f["baseline"]["name"], f["name"]
        assert f["baseline"]["value"] > 0, f["name"]
        assert f["ratio"] == pytest.approx(f["value"] / f["baseline"]["value"]), f["name"]
        assert f["spread"] == [min(f["rounds"]), max(f["rounds"])], f["name"]
        assert (f["met"] is None) == (f["target"] is None), f["name"]
    names = " ".join(f["name"] for f in figures)
    for expected in (
        "messages per worker CPU-second",
        "check p50, 1 client",
        "check p99, 8 clients",
        "patient with 30 results",
        "CDS Hooks order-select p99",
        "FHIR Observation search p99",
        "`mrb token issue`",
        "`mrb --help`",
    ):
        assert expected in names, expected
    # The bulk-loaded rows serve the real check and FHIR paths.
    assert report["facts"]["sqlite 200"]["verified"]["hit"] == "RECOGNIZABLE"
    assert report["facts"]["sqlite 200"]["verified"]["miss"] == "NO_PRIOR_RESULT"
    assert report["facts"]["sqlite 200"]["verified"]["fhir_entries"] > 0
    # The table is printed, one line per figure.
    assert sum(line.startswith("| ") for line in done.stdout.splitlines()) == len(figures) + 1
