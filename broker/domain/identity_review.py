"""What ingest does with the matcher's answers for one record, and how a review item and
an operator's reference to a person are read (pure; broker/storage/identity.py holds the
rows, broker/services/identity_review.py the use cases).

A record's candidates are people (after links: their surviving person); each may have
been seen at several hospitals, so the best of their records speaks for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.domain.matching import Decision, MatchResult

# Review items opened per arriving record at most: a record blocked with many similar
# people (a common name at one birth date) must not flood the queue.
MAX_REVIEWS_PER_RECORD = 5


class ReviewStatus(StrEnum):
    OPEN = "open"  # POSSIBLE_MATCH (or an ambiguous MATCH) waiting for a platform admin
    LINKED = "linked"  # an automatic MATCH, linked at ingest (reversible by unlink)
    CONFIRMED = "confirmed"  # a platform admin linked the pair
    REJECTED = "rejected"  # a platform admin decided they are different people


class Verdict(StrEnum):
    """A platform admin's decision on a review item."""

    CONFIRM = "confirm"
    REJECT = "reject"


class LinkKind(StrEnum):
    MANUAL = "manual"
    AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Plan:
    """For one record: the person to link it into automatically (None: none), and the
    pairs to put in the review queue, best first."""

    link: str | None
    review: tuple[tuple[str, MatchResult], ...]


def _key(result: MatchResult) -> tuple[int, float]:
    return (result.decision.rank, result.total)


def best_per_person(scored: Iterable[tuple[str, MatchResult]]) -> dict[str, MatchResult]:
    """The best result (decision first, then weight) per candidate person."""
    best: dict[str, MatchResult] = {}
    for person, result in scored:
        if person not in best or _key(result) > _key(best[person]):
            best[person] = result
    return best


def plan(
    candidates: Mapping[str, MatchResult], *, max_reviews: int = MAX_REVIEWS_PER_RECORD
) -> Plan:
    """Link automatically only when exactly one person is a MATCH: two people matching
    one record is itself a reason for a person to look, so then every MATCH and
    POSSIBLE_MATCH is reviewed. NO_MATCH is dropped (the record stays its own person)."""
    kept = sorted(
        ((p, r) for p, r in candidates.items() if r.decision is not Decision.NO_MATCH),
        key=lambda pr: (-pr[1].decision.rank, -pr[1].total, pr[0]),
    )
    matches = [p for p, r in kept if r.decision is Decision.MATCH]
    link = matches[0] if len(matches) == 1 else None
    review = tuple((p, r) for p, r in kept if p != link)[:max_reviews]
    return Plan(link, review)


def explanation(result: MatchResult) -> dict[str, Any]:
    """What a review item keeps of a comparison: levels and weights, never values."""
    return {
        "decision": result.decision.value,
        "total": result.total,
        "fields": [{"field": f.field, "level": f.level, "weight": f.weight} for f in result.fields],
        "identifier": result.identifier,
        "hard_rules": list(result.hard_rules),
    }


@dataclass(frozen=True)
class PersonRef:
    """How an operator names a person: by person id (as the review list shows it), or by
    one of their identifiers, SYSTEM|VALUE (a hospital-scoped one with its hospital)."""

    person_id: str | None = None
    system: str | None = None
    value: str | None = None
    hospital: str | None = None

    def __str__(self) -> str:
        # Never the identifier's value: this text reaches logs and error messages.
        return self.person_id or f"the {self.system} identifier given"


def parse_person(text: str, hospital: str | None = None) -> PersonRef:
    """`PERSON_ID` or `SYSTEM|VALUE`; ValueError naming the expected forms otherwise."""
    text = text.strip()
    if "|" in text:
        system, _, value = text.rpartition("|")
        if not system.strip() or not value.strip():
            raise ValueError("an identifier is SYSTEM|VALUE, both non-empty")
        return PersonRef(system=system.strip(), value=value.strip(), hospital=hospital)
    if not text:
        raise ValueError("name a person by person id or by SYSTEM|VALUE")
    return PersonRef(person_id=text)
