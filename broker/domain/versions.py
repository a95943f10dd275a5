"""Ordering of versions of one result (DESIGN.md: result identity and versions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class VersionOutcome(StrEnum):
    CURRENT = "current"  # this version now represents the result
    SUPERSEDED = "superseded"  # stored, but a later version already wins
    DUPLICATE = "duplicate"  # the same content was already stored: nothing changes


@dataclass(frozen=True)
class VersionKey:
    """Source time first (meta.lastUpdated, else issued, else MSH-7), then meta.versionId.

    A missing part sorts before any present one, so a version that states its time
    beats one that does not.
    """

    source_time: datetime | None
    version_number: int | None

    @classmethod
    def of(cls, source_time: datetime | None, version_id: str | None) -> VersionKey:
        return cls(source_time, _numeric(version_id))

    def sort_tuple(self) -> tuple[bool, float, bool, int]:
        ts = self.source_time.timestamp() if self.source_time is not None else 0.0
        n = self.version_number
        return (self.source_time is not None, ts, n is not None, n if n is not None else 0)

    def __lt__(self, other: VersionKey) -> bool:
        return self.sort_tuple() < other.sort_tuple()


def _numeric(version_id: str | None) -> int | None:
    if version_id is None:
        return None
    v = version_id.strip()
    return int(v) if v.isdigit() else None


@dataclass(frozen=True)
class StoredVersion:
    key: VersionKey
    content_hash: str
    is_current: bool


# Content hashes in use: "o" + 63 hex digits (SHA-256 of orjson's sorted-key JSON), and,
# stored before it, 64 hex digits (of the standard library's ASCII-escaped JSON), which a
# replay of the same content must still match.
HASH_MARK = "o"


def is_legacy_hash(content_hash: str) -> bool:
    return not content_hash.startswith(HASH_MARK)


def place_version(
    key: VersionKey,
    content_hash: str,
    existing: list[StoredVersion],
    legacy_hash: Callable[[], str] | None = None,
) -> VersionOutcome:
    """Decide where an arriving version goes among the versions already stored.

    Replays (same content) change nothing, also of a version stored under the earlier
    hash (`legacy_hash` computes it, only when such a version is there). Otherwise the
    greatest key wins; on an exact tie with different content the later arrival wins, the
    only order left.
    """
    if any(v.content_hash == content_hash for v in existing):
        return VersionOutcome.DUPLICATE
    if legacy_hash is not None and any(is_legacy_hash(v.content_hash) for v in existing):
        earlier = legacy_hash()
        if any(v.content_hash == earlier for v in existing):
            return VersionOutcome.DUPLICATE
    current = next((v for v in existing if v.is_current), None)
    if current is None or not key < current.key:
        return VersionOutcome.CURRENT
    return VersionOutcome.SUPERSEDED
