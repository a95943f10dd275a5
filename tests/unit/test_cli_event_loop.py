"""`mrb up|serve|worker|demo` run their stack on uvloop: uvicorn picks it only when it owns
the loop (`uvicorn.run`), and the stack owns it here, so the CLI must ask for it."""

from __future__ import annotations

import asyncio

from broker.cli import main


def test_the_cli_runs_its_stack_on_uvloop() -> None:
    seen: list[str] = []

    async def probe() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    main._run(probe())
    assert seen == ["uvloop"]
