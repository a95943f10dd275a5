"""Linking identifiers to people, and merging people that turn out to be one (pure).

Deterministic only: identifiers are linked when they arrive together on one result, and
two people whose identifiers meet on one result are one person. Which identifiers may link
across hospitals at all is decided before (broker/domain/identifiers.py: scope).

Except when that would give one person two numbers of the same national system (two
resident IDs): a national number names one person, so identifiers that lead there prove
only that a sender reused one of them (a FHIR Patient.id, an MRN) for another patient.
Linking on would show each patient the other's results; `conflict` finds it first and the
message is refused (PATIENT_IDENTITY_CONFLICT) with nothing linked.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime

# (pseudonym, national system or None for a hospital-scoped identifier): one identifier.
Key = tuple[str, str | None]
# person -> national system -> the pseudonyms of that system the person holds (one, but
# links made before the rule existed may hold more).
Held = Mapping[str, Mapping[str, Set[str]]]


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


def conflict(refs: Sequence[Sequence[Key]], known: Mapping[str, str], held: Held) -> str | None:
    """The national system of which linking `refs` in order (as a message's patients are
    staged) would give one person a second number, or None.

    `known`: pseudonym -> person; `held`: the national numbers of the people `known` names.
    A person who already holds several numbers of a system (linked before this rule) is
    not refused what they hold: only a number they gain, from the reference or a merge.
    """
    rep: dict[str, str] = {}  # person -> the person it is one with after earlier refs
    holds: dict[str, dict[str, frozenset[str]]] = {}  # representative -> its numbers now
    owner: dict[str, str] = {}  # pseudonym -> person, for identifiers linked by earlier refs

    def root(person: str) -> str:
        while person in rep:
            person = rep[person]
        return person

    def numbers(person: str) -> Mapping[str, Set[str]]:
        return holds[person] if person in holds else held.get(person, {})

    for index, ref in enumerate(refs):
        people = sorted(
            {root(owner.get(p) or known[p]) for p, _ in ref if p in owner or p in known}
        )
        arriving: dict[str, frozenset[str]] = {}
        for p, national in ref:
            if national is not None:
                arriving[national] = arriving.get(national, frozenset()) | {p}
        holders = [numbers(person) for person in people]
        if system := gained(holders, arriving):
            return system
        combined = _union([*holders, arriving])
        survivor = people[0] if people else f"new#{index}"
        for person in people[1:]:
            rep[person] = survivor
        holds[survivor] = combined
        for p, _ in ref:
            owner[p] = survivor
    return None


def gained(
    holders: Sequence[Mapping[str, Set[str]]], arriving: Mapping[str, Set[str]] | None = None
) -> str | None:
    """The national system of which joining `holders` (people or linked groups, each its
    numbers by system) and the `arriving` numbers would give one of them a number it does
    not hold, where that makes two; None if none would."""
    for system, values in _union([*holders, arriving or {}]).items():
        if len(values) > 1 and not any(h.get(system) == values for h in holders):
            return system
    return None


def _union(groups: Sequence[Mapping[str, Set[str]]]) -> dict[str, frozenset[str]]:
    combined: dict[str, frozenset[str]] = {}
    for numbers in groups:
        for system, values in numbers.items():
            combined[system] = combined.get(system, frozenset()) | frozenset(values)
    return combined
