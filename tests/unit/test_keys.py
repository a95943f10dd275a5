"""Key files: created once, whole, owner-only, even when many start at the same moment."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from broker.security.keys import load_or_create_key


def test_concurrent_creators_all_get_the_same_complete_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "k.key"
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(path), range(64)))
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert [p.name for p in path.parent.iterdir()] == ["k.key"]  # no temporary files left
    assert path.stat().st_mode & 0o077 == 0
