"""The ingest worker settles the heap (gc.freeze, a higher young-generation threshold)
only in a process that is a worker (`mrb worker`, `mrb up` ask for it), once: never in a
test or library process, whose other objects would be frozen with it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from broker.ingest import worker
worker._settle_heap()
unasked = (gc.get_freeze_count(), gc.get_threshold()[0])
worker.settle_heap_once_warm()
worker._settle_heap()
asked = (gc.get_freeze_count() > 0, gc.get_threshold()[0])
worker._settle_heap()  # once only
print(json.dumps({"unasked": unasked, "asked": asked, "again": gc.get_threshold()[0]}))
"""


def test_the_heap_is_settled_only_when_the_process_asks_and_once() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=60
    )
    seen = json.loads(run.stdout)
    assert seen["unasked"] == [0, 700]  # Python's defaults, untouched
    assert seen["asked"] == [True, 10_000]
    assert seen["again"] == 10_000
