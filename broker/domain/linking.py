"""Linking identifiers to people, and merging people that turn out to be one (pure).

Deterministic only: identifiers are linked when they arrive together on one result, and
two people whose identifiers meet on one result are one person. Which identifiers may link
across hospitals at all is decided before (broker/domain/identifiers.py: scope).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Link:
    """Where a result's identifiers lead: `person` (None: a new person), the people to merge
    into it (`merged`, empty unless the identifiers led to several), and which of the
    identifiers (as pseudonyms) are not linked yet."""

    person: str | None
    merged: frozenset[str]
    new_links: tuple[str, ...]


def link(pseudonyms: Sequence[str], known: Mapping[str, str], born: Mapping[str, datetime]) -> Link:
    """The person a result's identifier pseudonyms lead to in `known` (pseudonym -> person).

    Several people found: the oldest (earliest `born`; unknown counts as newest; then the
    smallest id, so every worker picks the same) survives and the others are merged into it."""
    found = {known[p] for p in pseudonyms if p in known}
    unlinked = tuple(dict.fromkeys(p for p in pseudonyms if p not in known))
    if not found:
        return Link(None, frozenset(), unlinked)
    survivor = min(found, key=lambda p: (p not in born, born.get(p), p))
    return Link(survivor, frozenset(found - {survivor}), unlinked)


def redirect(merges: MutableMapping[str, str], gone: frozenset[str], survivor: str) -> None:
    """Record that `gone` were merged into `survivor`, keeping `merges` (merged person ->
    survivor) one step deep: an earlier merge into a now-merged person points at the new
    survivor."""
    for old in gone:
        merges[old] = survivor
    for old, target in merges.items():
        if target in gone:
            merges[old] = survivor
