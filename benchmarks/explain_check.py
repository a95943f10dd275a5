"""Where a check's one read spends its time on a kept bench schema (docs/performance.md,
"Ninth round"): `EXPLAIN (ANALYZE, BUFFERS)` with `track_io_timing` of
`check_uow._find_with_items` for people sampled at random, each read cold and then warm.

    MRB_BENCH_KEEP_SCHEMA=1 make bench-large     # names the kept schema on stderr
    python -m benchmarks.explain_check SCHEMA [PEOPLE]

PostgreSQL only (the bench's `MRB_BENCH_PG_URL`); the connecting role must be allowed to
set `track_io_timing` (a superuser, as on the bench machine). Read-only.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from benchmarks.config import BenchConfig
from broker.storage.check_uow import _find_with_items
from broker.storage.database import create_engine

CODE = "718-7"  # a common lab code: the plan and the person's pages are read either way


def _number(pattern: str, plan: str) -> float:
    found = re.search(pattern, plan)
    return float(found.group(1)) if found else 0.0


async def _explain(c: AsyncConnection, sql: str) -> dict[str, float]:
    plan = "\n".join(r[0] for r in await c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql))
    return {
        "execution ms": _number(r"Execution Time: ([\d.]+)", plan),
        "pages read": _number(r"Buffers: shared hit=\d+ read=(\d+)", plan),
        "I/O ms": _number(r"I/O Timings: shared read=([\d.]+)", plan),
    }


async def main(schema: str, people: int) -> None:
    engine = create_engine(BenchConfig().pg_url, schema=schema)
    statement: Any = _find_with_items(True, True, False)
    try:
        async with engine.connect() as c:
            await c.exec_driver_sql("SET track_io_timing = on")
            # Whole pages at random (reading only those), about ten times the people asked.
            rows = (
                await c.execute(
                    text("SELECT reltuples FROM pg_class WHERE oid = 'person_link'::regclass")
                )
            ).scalar_one()
            percent = min(100.0, 1000.0 * people / max(float(rows), 1.0))
            sample = await c.execute(
                text(
                    f"SELECT pseudonym FROM person_link TABLESAMPLE SYSTEM ({percent:.6f}) "
                    "WHERE scope = 'national' LIMIT :n"
                ),
                {"n": people},
            )
            runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
            for (pseudonym,) in sample:
                bound = statement.params(pseudonym=pseudonym, codes=[CODE])
                sql = str(
                    bound.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
                )
                runs["cold"].append(await _explain(c, sql))
                runs["warm"].append(await _explain(c, sql))
    finally:
        await engine.dispose()
    for kind, found in runs.items():
        line = ", ".join(
            f"{name} median {statistics.median(r[name] for r in found):.2f} "
            f"(max {max(r[name] for r in found):.2f})"
            for name in ("execution ms", "pages read", "I/O ms")
        )
        print(f"{kind} ({len(found)} people): {line}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40))
