"""Fixtures shared by the end-to-end tests that run `mrb worker` processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.bootstrap import Container
from broker.settings import Settings
from tests import factories as f
from tests.e2e.test_own_state import cleanup
from tests.e2e.test_worker_faults import Site


@pytest.fixture
async def site(
    settings: Settings, container: Container, kafka: str, tmp_path: Path
) -> AsyncIterator[Site]:
    """An installation whose workers run as processes; any left running are killed."""
    f.receipt_trust(settings.keys_dir)  # the receipt key, as `mrb keys init` makes it
    site = Site(settings, container, kafka, tmp_path / "logs", settings.resolved_database_url)
    yield site
    async with cleanup(*site.started):  # SIGKILLs any worker still running
        pass
