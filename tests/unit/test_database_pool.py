"""Each long-running process keeps as many database connections open as it serves requests
at once (MRB_DATABASE_POOL_SIZE): with SQLAlchemy's default of 5, eight concurrent checks
closed three connections after every request and opened them again (py-spy on the check
bench: 3-5 % of the API's CPU in connecting, TLS negotiation and re-preparing statements).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from broker.bootstrap import Container
from broker.settings import Settings


def _pool(container: Container) -> QueuePool:
    pool = container.engine.pool
    assert isinstance(pool, QueuePool)
    return pool


async def _hold_at_once(container: Container, n: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            conn = await stack.enter_async_context(container.engine.connect())
            await conn.execute(text("SELECT 1"))


async def test_eight_requests_at_once_keep_their_connections_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    container = Container.build(settings)
    try:
        await _hold_at_once(container, 8)
        assert _pool(container).checkedin() == 8  # none closed on return
    finally:
        await container.close()


async def test_the_pool_size_and_its_overflow_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
        database_pool_size=2,
        database_max_overflow=1,
    )
    container = Container.build(settings)
    try:
        await _hold_at_once(container, 3)  # two kept, one more at the peak
        assert _pool(container).checkedin() == 2  # the overflow closed on return
        assert _pool(container).size() == 2
    finally:
        await container.close()


def test_a_pool_of_no_connections_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRB_DATABASE_POOL_SIZE", "0")
    with pytest.raises(ValidationError, match="database_pool_size"):
        Settings()
