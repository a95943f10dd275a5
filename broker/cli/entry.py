"""The `mrb` executable (and `python -m broker.cli`): start without the cyclic collector.

Starting a command is mostly importing (SQLAlchemy, pydantic, typer, structlog…: tens of
thousands of objects), and every 700 new objects the cyclic garbage collector walks the
young ones, finding almost nothing: imported modules and classes live until exit. Pausing
it for the first second of a command saved 9–14 % of `mrb token issue` here
(docs/performance.md, "Ninth round"). Reference counting still frees all acyclic
garbage meanwhile. A command that runs longer — `mrb serve`, `mrb worker`, a migration —
gets the collector back after START_SECONDS, with what start-up built frozen out of its
walks (one collection, then `gc.freeze`), without having to say so.
"""

from __future__ import annotations

import gc
import threading

START_SECONDS = 1.0


def main() -> None:
    pause_collector(START_SECONDS)
    from broker.cli.main import app

    app(prog_name="mrb")


def pause_collector(seconds: float) -> threading.Timer:
    """Disable the cyclic collector for `seconds` (a daemon timer resumes it)."""
    gc.disable()
    resume = threading.Timer(seconds, _resume)
    resume.daemon = True  # a short command exits without waiting for it
    resume.start()
    return resume


def _resume() -> None:
    gc.collect()  # once: what start-up left in cycles
    gc.freeze()  # the rest lives until exit: no later collection walks it
    gc.enable()
