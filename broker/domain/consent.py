"""A patient's consent and opt-out (issue "Patient rights"). Pure: no I/O.

Per person (the enterprise person id; never an identifier in clear):

- an **opt-out** of cross-hospital sharing: other hospitals see nothing of the person (every
  checked item answered as if no result existed, /fhir empty, no CDS card); the issuing
  hospital still sees its own. PIPL Art. 44: a person may restrict or refuse the processing
  of their personal information.
- a **consent** for one sensitive category (broker.domain.sensitivity; schemas/catalog/
  sensitive.yaml): that category becomes visible to other hospitals. PIPL Art. 29 (separate
  consent for sensitive personal information); 艾滋病防治条例 Art. 39 (HIV results not
  disclosed without the person's consent).

Each record says who recorded it, at which hospital, when, the evidence (a reference to the
signed form, never its content) and an expiry. A withdrawn or expired record counts for
nothing from that instant: the state is computed afresh on every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_EVIDENCE = 200  # characters of an evidence reference


class ConsentKind(StrEnum):
    OPT_OUT = "opt-out"  # deny all cross-hospital sharing
    SENSITIVE = "sensitive"  # permit one sensitive category


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    person_id: str
    kind: ConsentKind
    category: str | None  # the sensitive category code (kind SENSITIVE only)
    recorded_by: str
    recorded_hospital: str
    recorded_at: datetime
    evidence: str
    expires_at: datetime | None = None  # None: until withdrawn (an opt-out may be)
    recorded_role: str = "doctor"
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None

    def status(self, now: datetime) -> str:
        """FHIR Consent.status: active, or inactive once withdrawn or expired."""
        return "active" if self.in_force(now) else "inactive"

    def in_force(self, now: datetime) -> bool:
        if self.recorded_at > now:
            return False
        if self.withdrawn_at is not None and self.withdrawn_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class ConsentView:
    """What a person's records say now, for every read."""

    opted_out: bool = False
    categories: frozenset[str] = frozenset()  # sensitive categories consented to
    changed_at: datetime | None = None  # the last instant the answer changed (or will)

    def unchanged_since(self, at: datetime) -> bool:
        """A decision taken at `at` still holds (no record made, withdrawn or expired since)."""
        return self.changed_at is None or self.changed_at <= at


NO_CONSENT = ConsentView()
# A break-glass read sees as if every category were consented and no opt-out recorded; the
# caller decides which categories exist, so "all" is spelt by the reader (SensitivityTable).


def view_of(records: Iterable[ConsentRecord], now: datetime) -> ConsentView:
    """The records in force at `now`, as what other hospitals may see."""
    opted_out = False
    categories: set[str] = set()
    changed: datetime | None = None
    for r in records:
        for t in (r.recorded_at, r.withdrawn_at, r.expires_at):
            if t is not None and t <= now and (changed is None or t > changed):
                changed = t
        if not r.in_force(now):
            continue
        if r.kind is ConsentKind.OPT_OUT:
            opted_out = True
        elif r.category:
            categories.add(r.category)
    return ConsentView(opted_out, frozenset(categories), changed)


def check_new(
    kind: ConsentKind,
    category: str | None,
    evidence: str,
    expires_at: datetime | None,
    now: datetime,
    known_categories: Iterable[str],
) -> str | None:
    """Why a new record may not be made as asked (None: it may)."""
    if not evidence.strip():
        return "evidence is required: a reference to the signed consent or opt-out form"
    if len(evidence) > MAX_EVIDENCE:
        return f"evidence is a reference of at most {MAX_EVIDENCE} characters"
    if expires_at is not None and expires_at <= now:
        return "expires must be in the future"
    if kind is ConsentKind.SENSITIVE:
        known = sorted(known_categories)
        if category not in known:
            return f"category must be one of the sensitive categories: {', '.join(known)}"
        if expires_at is None:
            # PIPL Art. 29 asks for separate consent; mrb asks every consent to end (an
            # unverified default: the law names no term) so that it is asked for again.
            return "a consent to share a sensitive category needs an expiry (expires)"
    elif category is not None:
        return "an opt-out covers every result: give no category"
    return None
