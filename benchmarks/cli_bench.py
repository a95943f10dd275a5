"""CLI start (issue #16: `mrb --help` and `mrb token issue` under 0.5 s), wall time of the
`mrb` executable in a fresh interpreter, as an operator runs it.

Baselines: for `mrb token issue`, importing the libraries it needs (SQLAlchemy with its
asyncio extension, pydantic-settings, typer, structlog, PyJWT, aiosqlite) in a bare
interpreter, nothing of mrb's: the ratio is what mrb's own code and work add to them; for
`mrb --help`, a bare interpreter (`python -c pass`). Bytecode is
written by the warm-up runs (an installed mrb has its .pyc files; this machine's
environment may set PYTHONDONTWRITEBYTECODE, which the runs drop). A round is the median
of MRB_BENCH_CLI_RUNS runs (5); the figure keeps each round.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.procs import MRB, REPO, mrb

WARM_UP = 2
LIBRARIES = "import sqlalchemy.ext.asyncio, pydantic_settings, typer, structlog, jwt, aiosqlite"
ISSUE = ["token", "issue", "--role", "finance", "--subject", "bench", "--hospital", "H001"]


@dataclass(frozen=True)
class CliResult:
    help: list[float]  # seconds, one per round
    issue: list[float]
    libraries: list[float]
    bare: list[float]
    loop: list[float]  # a fixed pure-Python loop: how fast the machine was meanwhile


def executable() -> list[str]:
    """The `mrb` console script beside this interpreter (what operators run), else -m."""
    script = Path(sys.executable).with_name("mrb")
    return [str(script)] if script.exists() else MRB


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRB_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "MRB_DATA_DIR": str(folder), "MRB_OPERATOR": "bench"}


def _once(argv: list[str], env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=dict(env), cwd=REPO, check=True, capture_output=True, timeout=60)
    return time.perf_counter() - started


def _loop() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - started


def measure(work: Path, rounds: int, runs_a_round: int) -> CliResult:
    folder = work / "cli"
    env = _env(folder)
    for args in (["keys", "init"], ["db", "upgrade"]):
        mrb(["-q", *args], env)
    mrb(
        ["-q", "hospital", "add", "H001", "--name", "Bench", "--region", "510502", "--level", "3"],
        env,
    )
    commands = {
        "help": [*executable(), "--help"],
        "issue": [*executable(), *ISSUE],
        "libraries": [sys.executable, "-c", LIBRARIES],
        "bare": [sys.executable, "-c", "pass"],
    }
    for argv in commands.values():
        for _ in range(WARM_UP):
            _once(argv, env)
    out: dict[str, list[float]] = {name: [] for name in (*commands, "loop")}
    for _ in range(rounds):
        runs: dict[str, list[float]] = {name: [] for name in out}
        for _ in range(runs_a_round):  # interleaved: a slow moment of the machine hits them all
            for name, argv in commands.items():
                runs[name].append(_once(argv, env))
            runs["loop"].append(_loop())
        for name, values in runs.items():
            out[name].append(statistics.median(values))
    return CliResult(out["help"], out["issue"], out["libraries"], out["bare"], out["loop"])
