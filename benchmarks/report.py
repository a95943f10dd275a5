"""The bench's figures: each a measurement beside its baseline from the same run.

A figure keeps every round's value (after a warm-up that is not kept), so its spread is
the min–max across rounds; its headline value is the median of the rounds. The ratio is
value / baseline; a target says which of the two it applies to.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """`on` "value" or "ratio"; `at_most` or `at_least` `limit`; `source` where it comes from."""

    on: str
    limit: float
    at_most: bool
    source: str = "issue #16"

    def met(self, value: float, ratio: float) -> bool:
        x = value if self.on == "value" else ratio
        return x <= self.limit if self.at_most else x >= self.limit

    def text(self, unit: str) -> str:
        op = "≤" if self.at_most else "≥"
        return f"{op} {self.limit:g} {unit}" if self.on == "value" else f"ratio {op} {self.limit:g}"


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    rounds: list[float]
    baseline_name: str
    baseline_rounds: list[float]
    target: Target | None = None
    note: str = ""
    higher_is_better: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.rounds)

    @property
    def baseline(self) -> float:
        return statistics.median(self.baseline_rounds)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "unit": self.unit,
            "value": self.value,
            "rounds": self.rounds,
            "spread": [min(self.rounds), max(self.rounds)],
            "baseline": {
                "name": self.baseline_name,
                "value": self.baseline,
                "rounds": self.baseline_rounds,
                "spread": [min(self.baseline_rounds), max(self.baseline_rounds)],
            },
            "ratio": self.ratio,
            "target": None
            if self.target is None
            else {**asdict(self.target), "text": self.target.text(self.unit)},
            "met": self.met,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


@dataclass
class Report:
    config: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # verifications, sizes, timings
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def add(self, figure: Figure) -> Figure:
        if len(figure.rounds) < 2 or len(figure.baseline_rounds) < 2:
            raise ValueError(f"{figure.name}: a figure needs at least two rounds of each")
        self.figures.append(figure)
        return figure

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"python": platform.python_version(), "cpus": _cpus(), **_uname()},
            "config": self.config,
            "figures": [f.as_json() for f in self.figures],
            "facts": self.facts,
            "notes": self.notes,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n")

    def table(self) -> str:
        """Markdown: one line per figure, with its spread, baseline, ratio and target."""
        lines = [
            "| section | figure | value (rounds min–max) | baseline (min–max) | ratio | target "
            "| met |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in self.figures:
            met = {None: "—", True: "met", False: "**missed**"}[f.met]
            lines.append(
                f"| {f.section} | {f.name} | {_num(f.value)} {f.unit} "
                f"({_num(min(f.rounds))}–{_num(max(f.rounds))}) | {f.baseline_name}: "
                f"{_num(f.baseline)} ({_num(min(f.baseline_rounds))}–"
                f"{_num(max(f.baseline_rounds))}) | {f.ratio:.2f} | "
                f"{f.target.text(f.unit) if f.target else '—'} | {met} |"
            )
        return "\n".join(lines)


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _uname() -> dict[str, str]:
    u = platform.uname()
    return {"system": u.system, "release": u.release, "machine": u.machine}
