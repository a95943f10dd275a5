"""CDS Hooks feedback -> the doctor's outcome for the card's check item (pure).

- `accepted` with the card's suggestion -> accepted (the saving is booked);
- `overridden` with one of mrb's reasons (`urn:mrb:decline-reason`) -> declined with it;
  `OTHER` takes the user's comment as its text (no comment: reason unknown, since OTHER
  without a text says nothing);
- `overridden` with a reason of the EHR's own (the spec lets EHRs add reasons) or with
  only a comment -> declined, OTHER, the text naming the EHR's reason and the comment;
- `overridden` with neither -> declined, reason unknown (DESIGN.md).
"""

from __future__ import annotations

from broker.cdshooks.cards import DECLINE_REASON_SYSTEM
from broker.cdshooks.models import Feedback
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind

TEXT_MAX = 1000


class FeedbackRefused(ValueError):
    """Feedback that cannot be an outcome (the message says why)."""


def to_outcome(entry: Feedback, suggestion_uuid: str | None) -> OutcomeInput:
    if entry.outcome == "accepted":
        accepted = {s.id for s in entry.acceptedSuggestions or []}
        if not accepted:
            raise FeedbackRefused("an accepted outcome needs acceptedSuggestions (the spec)")
        if suggestion_uuid is None or suggestion_uuid not in accepted:
            raise FeedbackRefused("acceptedSuggestions does not name this card's suggestion")
        return OutcomeInput(OutcomeKind.ACCEPTED)
    override = entry.overrideReason
    comment = (override.userComment or "").strip() if override else ""
    reason = override.reason if override else None
    if reason is None:
        if comment:
            return OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER, _cut(comment))
        return OutcomeInput(OutcomeKind.DECLINED, DeclineReason.UNKNOWN)
    ours = reason.system in (None, "", DECLINE_REASON_SYSTEM)
    if ours and reason.code in DeclineReason.__members__:
        chosen = DeclineReason(reason.code)
        if chosen is DeclineReason.OTHER and not comment:
            return OutcomeInput(OutcomeKind.DECLINED, DeclineReason.UNKNOWN)
        return OutcomeInput(OutcomeKind.DECLINED, chosen, _cut(comment) if comment else None)
    named = reason.display or reason.code
    text = f"EHR reason: {named} ({reason.system or ''}|{reason.code})"
    if comment:
        text += f"; {comment}"
    return OutcomeInput(OutcomeKind.DECLINED, DeclineReason.OTHER, _cut(text))


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 1] + "…"
