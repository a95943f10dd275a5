"""Result retention (issue "Patient rights"): how long a result stays in the recognition
index and the FHIR search facade, and whether it is past that now.

A period is a whole number of days per result category (lab, imaging, report), optionally
replaced per catalog item for the rows mapped to it; a result is kept as long as its
longest-kept row. Days, not years: no leap-year ambiguity. The days count from the result's
anchor (`anchor`): its effective time, else when it was issued, else when mrb last received
it. A result is past retention from anchor + days, at that instant and after.

mrb is a recognition index, not the medical record (the hospital keeps that): PIPL Art. 19
asks for the shortest period the purpose needs. No period may be shorter than a validity
window it covers (`shortfalls`): a result never leaves the index while it could still be
recognised. The ledger and the audit trail are not results and never expire here.

Data: schemas/catalog/retention.yaml (broker/reference/retention.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.domain.catalog import Catalog, ItemKind

UNVERIFIED = "unverified-default"  # a period no text read states


@dataclass(frozen=True)
class RetentionPeriod:
    days: int
    source: str = UNVERIFIED  # the text stating the number, one line; or UNVERIFIED
    basis: tuple[str, ...] = ()  # the texts asking results to be kept or deleted at all

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"a retention period is at least 1 day, not {self.days}")

    @property
    def delta(self) -> timedelta:
        return timedelta(days=self.days)


def anchor(effective: datetime | None, issued: datetime | None, received: datetime) -> datetime:
    """The moment a result's retention counts from: when it was effective (the time its
    validity window counts from), else when it was issued, else when mrb received it."""
    return effective or issued or received


@dataclass(frozen=True)
class RetentionPolicy:
    default: RetentionPeriod
    categories: Mapping[str, RetentionPeriod] = field(default_factory=dict)  # ResultKind
    items: Mapping[str, RetentionPeriod] = field(default_factory=dict)  # catalog item code
    version: str = "none"

    def period(self, category: str, items: Iterable[str | None] = ()) -> RetentionPeriod:
        """The period of a result of `category` whose rows map to `items` (None: a row of
        no catalog item): the longest of its rows' periods, a row taking its item's own
        period if it has one, else the category's (else the default)."""
        of_category = self.categories.get(category, self.default)
        periods = [self.items.get(i, of_category) if i else of_category for i in items]
        return max(periods, key=lambda p: p.days, default=of_category)

    def expires_at(
        self, category: str, anchored_at: datetime, items: Iterable[str | None] = ()
    ) -> datetime:
        """The first instant the result is past retention."""
        return anchored_at + self.period(category, items).delta

    def expired(
        self,
        category: str,
        anchored_at: datetime,
        now: datetime,
        items: Iterable[str | None] = (),
    ) -> bool:
        """Whether the result is past retention at `now` (from anchor + days on)."""
        return now >= self.expires_at(category, anchored_at, items)

    @property
    def shortest(self) -> RetentionPeriod:
        """The shortest period of all: no result anchored later than now minus it can
        have expired (what storage may scan by)."""
        every = (self.default, *self.categories.values(), *self.items.values())
        return min(every, key=lambda p: p.days)

    def shortfalls(self, catalog: Catalog) -> list[str]:
        """Periods shorter than a validity window they cover (the catalog's and every
        region's): each a sentence; [] when none. An item's own period covers its window;
        a category's covers every item of its kind (report: every item)."""
        longest = _longest_windows(catalog)
        out: list[str] = []
        for code, p in sorted(self.items.items()):
            window = longest.get(code, 0)
            if p.days < window:
                out.append(f"item {code}: {p.days} days < its validity window of {window} days")
        for category, p in sorted({"default": self.default, **self.categories}.items()):
            kinds = _KINDS.get(category)
            windows = [
                (w, c)
                for c, w in longest.items()
                if c not in self.items and (kinds is None or catalog.items[c].kind in kinds)
            ]
            if windows:
                window, code = max(windows)
                if p.days < window:
                    out.append(
                        f"{category}: {p.days} days < the validity window of {code} ({window} days)"
                    )
        return out


# The catalog item kinds a result category can be recognised as (None: any).
_KINDS: Mapping[str, frozenset[ItemKind]] = {
    "lab": frozenset({ItemKind.LAB, ItemKind.PANEL}),
    "imaging": frozenset({ItemKind.IMAGING}),
}


def _longest_windows(catalog: Catalog) -> dict[str, int]:
    """Each item's longest validity window, in the catalog or any region's override (an
    age band's own window included)."""
    longest: dict[str, int] = {}
    for code, item in catalog.items.items():
        windows = [item.validity_days]
        windows += [b.validity_days for b in item.age_bands if b.validity_days is not None]
        windows += [r.validity_days[code] for r in catalog.regions if code in r.validity_days]
        longest[code] = max(windows)
    return longest
