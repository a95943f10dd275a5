"""Doctor outcomes, the savings ledger's periods and what a changed result means (pure).

A recognition only saves money once a doctor accepts it. The ledger is append-only: an
accepted item adds one saving; a correction is a reversal entry, never an edit. Money is
Decimal yuan, rounded to the fen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from broker.domain.recognition import SHANGHAI, Decision, Text
from broker.domain.results import WITHDRAWN_STATUSES
from broker.domain.safety_actions import SafetyAction as SafetyAction  # re-exported

FEN = Decimal("0.01")


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"


class DeclineReason(StrEnum):
    """The regulation's grounds for testing again (DESIGN.md), plus 'reason unknown'."""

    CONDITION_CHANGED = "CONDITION_CHANGED"
    RAPID_CHANGE = "RAPID_CHANGE"
    KEY_DECISION = "KEY_DECISION"
    EMERGENCY = "EMERGENCY"
    FORENSIC_ASSESSMENT = "FORENSIC_ASSESSMENT"
    PATIENT_REQUEST = "PATIENT_REQUEST"
    QUALITY_DOUBT = "QUALITY_DOUBT"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"  # an override that gave no reason


REASON_DISPLAY: dict[DeclineReason, Text] = {
    DeclineReason.CONDITION_CHANGED: Text("病情变化", "The patient's condition has changed"),
    DeclineReason.RAPID_CHANGE: Text(
        "检验结果变化快，需复查", "A fast-changing result that must be measured again"
    ),
    DeclineReason.KEY_DECISION: Text(
        "手术、输血等重大诊疗前需复查",
        "A key decision (surgery, transfusion or another major procedure)",
    ),
    DeclineReason.EMERGENCY: Text("急诊、急救", "Emergency care"),
    DeclineReason.FORENSIC_ASSESSMENT: Text(
        "司法鉴定、伤残或病退鉴定", "A forensic, disability or medical-retirement assessment"
    ),
    DeclineReason.PATIENT_REQUEST: Text("患者要求复查", "The patient asked for a new test"),
    DeclineReason.QUALITY_DOUBT: Text(
        "对结果质量存疑（室间质评不合格、图像质量差、部位不符）",
        "Doubt about quality (failed EQA, poor image quality, wrong body part)",
    ),
    DeclineReason.OTHER: Text("其他", "Other"),
    DeclineReason.UNKNOWN: Text("未说明理由", "No reason given"),
}


class OutcomeRefused(ValueError):
    """An outcome that cannot be recorded as sent; the message says why."""


@dataclass(frozen=True)
class OutcomeInput:
    outcome: OutcomeKind
    reason: DeclineReason | None = None
    reason_text: str | None = None


def validate_outcome(decision: str, given: OutcomeInput) -> OutcomeInput:
    """The outcome as it will be stored: reasons only on declines, text required for OTHER."""
    if decision != Decision.RECOGNIZABLE.value:
        raise OutcomeRefused(
            f"the check answered {decision} for this item: there is no recognition to "
            "accept or decline; order the test"
        )
    text = (given.reason_text or "").strip() or None
    if given.outcome is OutcomeKind.ACCEPTED:
        if given.reason is not None:
            raise OutcomeRefused("an accepted item takes no decline reason")
        return OutcomeInput(OutcomeKind.ACCEPTED, None, text)
    reason = given.reason or DeclineReason.UNKNOWN
    if reason is DeclineReason.OTHER and text is None:
        raise OutcomeRefused("reason OTHER needs a reason_text saying why the test is repeated")
    return OutcomeInput(OutcomeKind.DECLINED, reason, text)


def to_yuan(value: str | Decimal) -> Decimal:
    return Decimal(value).quantize(FEN, rounding=ROUND_HALF_UP)


# -- who would have paid: the medical-insurance fund and the patient ----------------------


@dataclass(frozen=True)
class Split:
    """A saving in integer fen split between the medical-insurance fund (基金支付) and the
    patient (个人自付); the two always add up to the amount exactly."""

    fund_fen: int
    patient_fen: int

    @property
    def amount_fen(self) -> int:
        return self.fund_fen + self.patient_fen

    def negated(self) -> Split:
        """The split of a reversal: both shares taken back."""
        return Split(-self.fund_fen, -self.patient_fen)


def split_fee(amount_fen: int, fund_share: Decimal) -> Split:
    """The fund's share of `amount_fen` rounded to the fen (half up, as `to_yuan`); the
    patient pays the rest, so nothing is lost or created by rounding."""
    if not (fund_share.is_finite() and Decimal(0) <= fund_share <= Decimal(1)):
        raise ValueError(f"fund share {fund_share} is not a fraction from 0 to 1")
    fund = int((Decimal(amount_fen) * fund_share).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return Split(fund, amount_fen - fund)


# -- periods --------------------------------------------------------------------------


def month_of(moment: datetime | date) -> str:
    """The accounting month ("YYYY-MM") of a moment, in China Standard Time."""
    day = moment.astimezone(SHANGHAI).date() if isinstance(moment, datetime) else moment
    return f"{day.year:04d}-{day.month:02d}"


def next_month(period: str) -> str:
    year, month = parse_month(period)
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def parse_month(period: str) -> tuple[int, int]:
    """("2026", "05") from "2026-05"; ValueError for anything else."""
    try:
        year_s, month_s = period.split("-")
        year, month = int(year_s), int(month_s)
    except ValueError:
        raise ValueError(f"{period!r} is not a month; write YYYY-MM, e.g. 2026-05") from None
    if len(year_s) != 4 or len(month_s) != 2 or not 1 <= month <= 12:
        raise ValueError(f"{period!r} is not a month; write YYYY-MM, e.g. 2026-05")
    return year, month


def ledger_period(moment: datetime, closed: set[str]) -> str:
    """The month an entry made at `moment` books into: its own, or the next open one."""
    period = month_of(moment)
    while period in closed:
        period = next_month(period)
    return period


# -- a recognised result changed ---------------------------------------------------------


class ChangeKind(StrEnum):
    """Why a recognised result no longer stands as it was: the notice's `kind`."""

    CORRECTED = "corrected"
    WITHDRAWN = "withdrawn"
    # The result itself is unchanged, but the patient link the recognition found it
    # through was undone (`mrb patient unlink`): it belongs to another person.
    LINK_UNDONE = "link-undone"


def change_kind(new_status: str) -> ChangeKind:
    return ChangeKind.WITHDRAWN if new_status in WITHDRAWN_STATUSES else ChangeKind.CORRECTED


@dataclass(frozen=True)
class SafetyPolicy:
    """What happens to a saving when its result changes (MRB_LEDGER_ON_* settings)."""

    on_withdrawn: SafetyAction = SafetyAction.REVERSE
    on_corrected: SafetyAction = SafetyAction.FLAG

    def action(self, kind: ChangeKind) -> SafetyAction:
        if kind is ChangeKind.LINK_UNDONE:
            # Another person's result saved this patient nothing: always reversed, whatever
            # the policy for results their own hospital withdrew or corrected.
            return SafetyAction.REVERSE
        return self.on_withdrawn if kind is ChangeKind.WITHDRAWN else self.on_corrected


def change_notice(kind: ChangeKind, item: Text, hospital: str, new_status: str) -> Text:
    """What the recognising doctor reads."""
    if kind is ChangeKind.LINK_UNDONE:
        return Text(
            f"您已互认的{hospital}「{item.zh}」结果所依据的患者身份关联已被撤销："
            "该结果属于另一位患者，不能用于本患者。请复核基于它的诊疗决策，必要时重新开具检查。",
            f"The patient link that your recognition of the {item.en} result from {hospital} "
            "relied on was undone: the result belongs to another person and must not be used "
            "for this patient. Review the decisions based on it and order the test if needed.",
        )
    if kind is ChangeKind.WITHDRAWN:
        return Text(
            f"您已互认的{hospital}「{item.zh}」结果已被撤回（{new_status}），"
            "请复核诊疗决策，必要时重新开具检查。",
            f"The {item.en} result from {hospital} that you recognised has been withdrawn "
            f"({new_status}). Review the decisions based on it and order the test if needed.",
        )
    return Text(
        f"您已互认的{hospital}「{item.zh}」结果已被更正（{new_status}），请查看新版本。",
        f"The {item.en} result from {hospital} that you recognised has been corrected "
        f"({new_status}). Review the new version.",
    )
