"""The `mrb` executable starts with the cyclic collector paused (broker/cli/entry.py) and
gives it back to any command that runs longer than the start-up pause."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: pausing the collector here would pause it for the suite.
PROBE = """
import gc
from broker.cli.entry import pause_collector
resume = pause_collector(0.2)
assert not gc.isenabled(), "paused at once"
frozen_before = gc.get_freeze_count()
garbage = [[]]
garbage[0].append(garbage)  # a cycle made while paused
del garbage
resume.join(5)
assert gc.isenabled(), "resumed after the pause"
assert gc.get_freeze_count() > frozen_before, "start-up's objects frozen"
print("ok")
"""


def test_the_collector_is_paused_then_resumed() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_mrb_executable_and_python_m_start_through_the_entry() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mrb"] == "broker.cli.entry:main"
    assert "broker.cli.entry" in (ROOT / "broker/cli/__main__.py").read_text()


def test_a_command_run_through_the_entry_is_named_mrb() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: mrb " in done.stdout
