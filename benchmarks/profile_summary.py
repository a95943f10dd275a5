"""Summarise a py-spy profile: `python -m benchmarks.profile_summary FILE [N] [WITHIN]`.

FILE is py-spy's collapsed output (`py-spy record --format raw -o FILE --pid PID`): one
line per stack, frames separated by ';', then the sample count. Prints the N functions
with the most samples on top of the stack (self) and anywhere in it (inclusive), as
shares of all samples; with WITHIN, only of the stacks through a function of that name
(e.g. `run_asgi`: the requests, not the threads waiting beside them).
docs/performance.md quotes them.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(
    lines: list[str], within: str | None = None
) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        if within is not None and not any(_named(f, within) for f in frames):
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, own, inclusive


def _named(frame: str, name: str) -> bool:
    qualified = frame.split(" (", 1)[0]
    return qualified == name or qualified.endswith(f".{name}")


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def main() -> None:
    lines = Path(sys.argv[1]).read_text().splitlines()
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    total, own, inclusive = summarise(lines, sys.argv[3] if len(sys.argv) > 3 else None)
    print(f"{total} samples")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"\ntop {top} by {title} time:")
        for name, n in counts.most_common(top):
            print(f"{100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
