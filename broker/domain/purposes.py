"""Purposes of use (issue "Patient rights"): the fixed list every read of patient data states.

Data: schemas/policy/purposes.yaml (broker/reference/purposes.py). Each purpose has mrb's
audit word and its HL7 v3 ActReason (PurposeOfUse) code; either is accepted at every read
entrance (check API, /fhir, CDS Hooks). An unknown purpose is refused (400); a known one a
doctor may not state is refused too (403): a doctor reads for treatment (PIPL Art. 28: a
specific purpose). Break-glass: an emergency purpose plus a reason lets a read go beyond the
patient's consent, opt-out and sensitivity, flagged in the audit trail. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broker.domain.errors import Invalid, NotAllowed, Refused

TREATMENT = "treatment"
EMERGENCY = "emergency-treatment"
BREAK_GLASS = "break-glass"
MAX_REASON = 500  # characters of a break-glass reason kept in the audit trail


class UnknownPurpose(Refused):
    """A purpose that is not on the list: 400 at every edge (an unmapped Refused)."""


@dataclass(frozen=True)
class Purpose:
    code: str  # mrb's audit word: treatment, emergency-treatment, break-glass, ...
    v3: str  # HL7 v3 ActReason code: TREAT, ETREAT, BTG, ...
    name_zh: str
    name_en: str
    doctor: bool = False  # a doctor may state it for reading patient results
    emergency: bool = False  # with a reason, may break the glass
    basis: tuple[str, ...] = ()


@dataclass(frozen=True)
class PurposeTable:
    purposes: tuple[Purpose, ...]
    version: str = "none"
    _by: Mapping[str, Purpose] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by: dict[str, Purpose] = {}
        for p in self.purposes:
            by[p.code.lower()] = p
            by[p.v3.lower()] = p
        object.__setattr__(self, "_by", by)

    def parse(self, stated: str | None, *, default: str = TREATMENT) -> Purpose:
        """The purpose named by its audit word or v3 code (any case); `default` when none."""
        text = (stated or "").strip() or default
        found = self._by.get(text.lower())
        if found is None:
            known = ", ".join(f"{p.v3} ({p.code})" for p in self.purposes)
            raise UnknownPurpose(
                "Unknown purpose of use", f"purpose {text[:40]!r} is not on the list: {known}"
            )
        return found

    def get(self, code: str) -> Purpose:
        return self.parse(code)


@dataclass(frozen=True)
class StatedPurpose:
    """What a doctor's read states: its purpose, and the break-glass reason if it breaks it."""

    purpose: Purpose
    break_glass_reason: str | None = None

    @property
    def break_glass(self) -> bool:
        return self.break_glass_reason is not None

    @property
    def audit(self) -> str:
        """The audit trail's purpose word: break-glass reads are flagged as such."""
        return BREAK_GLASS if self.break_glass else self.purpose.code


def doctor_read(
    table: PurposeTable,
    stated: str | None,
    *,
    emergency: bool = False,
    reason: str | None = None,
) -> StatedPurpose:
    """Validate a doctor's read: a known purpose a doctor may state; break-glass when the
    read is an emergency (the flag or an emergency purpose) and a reason is given.

    An emergency without a reason is an ordinary emergency read: it does not go beyond
    consent or opt-out. Stating BTG itself without a reason is refused."""
    purpose = table.parse(stated, default=EMERGENCY if emergency else TREATMENT)
    if not purpose.doctor:
        raise NotAllowed(
            "Purpose not allowed",
            f"a doctor reads a patient's results for treatment at their own hospital; "
            f"{purpose.v3} ({purpose.code}) is not a doctor's purpose",
        )
    text = " ".join((reason or "").split())[:MAX_REASON] or None
    if purpose.code == BREAK_GLASS and text is None:
        raise Invalid(
            "Break-glass needs a reason",
            "a break-glass read (BTG) must give its reason (break_glass_reason / "
            "X-Break-Glass-Reason)",
        )
    if text is not None and not (emergency or purpose.emergency):
        raise Invalid(
            "Break-glass needs an emergency",
            "a break-glass reason is accepted only with an emergency read "
            "(emergency: true, or purpose ETREAT or BTG)",
        )
    return StatedPurpose(purpose, text)
