"""CDS Hooks cards for recognition decisions (pure).

- RECOGNIZABLE: an `info` card (the order is not wrong, it is unnecessary) with one
  suggestion, "recognise and remove the duplicate order" (a `delete` action on the draft
  ServiceRequest), `selectionBehavior` "at-most-one", the regulation's decline reasons as
  `overrideReasons`, and links to the doctor's page and the prior result.
  When a newer result exists or the candidate is flagged abnormal or critical, the card
  is a `warning` and its detail names them (the receiving doctor decides).
- WITHDRAWN: a `warning` card without suggestions: a result the doctor may have seen at
  another hospital was withdrawn; the test must be done.
- Every other decision (no prior result, expired, out of scope, ...) gets no card: mrb
  stays quiet unless it has something to offer.

Text from hospitals (result summaries, names) is escaped before it goes into Markdown.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from broker.domain.ledger import REASON_DISPLAY, DeclineReason
from broker.domain.recognition import Decision, Text

SOURCE_LABEL = "mrb 检查检验结果互认"
DECLINE_REASON_SYSTEM = "urn:mrb:decline-reason"
TOPIC = {
    "system": "urn:mrb:cds-topic",
    "code": "mutual-recognition",
    "display": "检查检验结果互认 Mutual recognition",
}
SUGGESTION_LABEL = "采纳互认，删除重复医嘱 Recognise and remove the duplicate order"
SUMMARY_MAX = 139  # the spec: a summary of fewer than 140 characters
RECOGNITION = "recognition"  # card kinds, as stored
NOTICE = "notice"

DECISION_ZH = {
    Decision.RECOGNIZABLE: "可互认",
    Decision.WITHDRAWN: "既往结果已撤回",
}


@dataclass(frozen=True)
class CardFacts:
    """What a card says about one ordered item (from the check's decision)."""

    decision: Decision
    item: Text  # the catalog item's name
    explanation: Text
    hospital: str  # the prior result's hospital id
    hospital_name: str | None
    effective: date | None  # the prior result's date (China Standard Time)
    status: str
    summary: str
    valid_until: date | None
    fee_saved: Decimal | None
    result_url: str | None  # absolute link to the result (ImagingStudy / DiagnosticReport)
    imaging: bool = False
    notes: tuple[Text, ...] = ()
    # Newer results and the candidate's abnormal or critical flags: the doctor decides.
    warnings: tuple[Text, ...] = ()


def card_kind(decision: Decision) -> str | None:
    """Which card a decision gets: recognition, notice, or none."""
    if decision is Decision.RECOGNIZABLE:
        return RECOGNITION
    if decision is Decision.WITHDRAWN:
        return NOTICE
    return None


def override_reasons() -> list[dict[str, str]]:
    """The regulation's grounds for testing again, as CDS Hooks Codings (display in zh)."""
    return [
        {"system": DECLINE_REASON_SYSTEM, "code": r.value, "display": d.zh}
        for r, d in REASON_DISPLAY.items()
        if r is not DeclineReason.UNKNOWN
    ]


def card_content(facts: CardFacts, *, draft_ref: str, base_url: str) -> dict[str, Any]:
    """The card without its uuids (they are given each time it is issued: `issue`)."""
    kind = card_kind(facts.decision)
    if kind is None:
        raise ValueError(f"no card for {facts.decision}")
    base = base_url if base_url.endswith("/") else base_url + "/"
    card: dict[str, Any] = {
        "summary": summary(facts),
        "indicator": "info" if kind == RECOGNITION and not facts.warnings else "warning",
        "detail": detail(facts),
        "source": {"label": SOURCE_LABEL, "url": f"{base}doctor", "topic": dict(TOPIC)},
    }
    if kind == RECOGNITION:
        card["suggestions"] = [
            {
                "label": SUGGESTION_LABEL,
                "isRecommended": True,
                "actions": [
                    {
                        "type": "delete",
                        "description": (
                            f"删除重复医嘱 {draft_ref}，采纳{facts.hospital}的结果 "
                            f"Remove the duplicate order {draft_ref}; recognise the "
                            f"result from {facts.hospital}"
                        ),
                        "resourceId": draft_ref,
                    }
                ],
            }
        ]
        card["selectionBehavior"] = "at-most-one"
        card["overrideReasons"] = override_reasons()
    card["links"] = _links(facts, base)
    return card


def issue(content: dict[str, Any], card_uuid: str, suggestion_uuid: str | None) -> dict[str, Any]:
    """The card as returned: its uuid first, and the suggestion's uuid."""
    card: dict[str, Any] = {"uuid": card_uuid, **copy.deepcopy(content)}
    for suggestion in card.get("suggestions", []):
        if suggestion_uuid is None:
            raise ValueError("a card with a suggestion needs the suggestion's uuid")
        suggestion["uuid"] = suggestion_uuid
    return card


def summary(facts: CardFacts) -> str:
    """One sentence, Chinese first, always fewer than 140 characters."""
    where = facts.hospital_name or facts.hospital
    when = facts.effective.isoformat() if facts.effective else "日期不详"
    if facts.decision is Decision.RECOGNIZABLE:
        fee = f"，可省¥{facts.fee_saved:.2f}" if facts.fee_saved is not None else ""
        until = f"，有效至{facts.valid_until.isoformat()}" if facts.valid_until else ""
        text = (
            f"可互认：{where} {when} 的{facts.item.zh}结果{until}，无需重复检查{fee}。"
            f" Recognisable: {facts.item.en} from {facts.hospital}"
        )
    else:
        text = (
            f"注意：{where} {when} 的{facts.item.zh}结果已撤回，不可互认。"
            f" Withdrawn: {facts.item.en} from {facts.hospital}"
        )
    return fit(text)


def fit(text: str, limit: int = SUMMARY_MAX) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis when longer."""
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1].rstrip() + "…"


def detail(facts: CardFacts) -> str:
    """GitHub-flavoured Markdown: the decision, why (zh, en), the prior result, the money."""
    zh = DECISION_ZH.get(facts.decision, facts.decision.value)
    where = md(facts.hospital_name or facts.hospital)
    if facts.hospital_name:
        where += f"（{md(facts.hospital)}）"
    lines = [
        f"**互认决定 Decision:** {zh} `{facts.decision.value}`",
        "",
        md(facts.explanation.zh),
        "",
        md(facts.explanation.en),
        "",
        "| 既往结果 Prior result | |",
        "|---|---|",
        f"| 项目 Item | {md(facts.item.zh)} {md(facts.item.en)} |",
        f"| 医院 Hospital | {where} |",
        f"| 日期 Date | {facts.effective.isoformat() if facts.effective else '—'} |",
        f"| 状态 Status | {md(facts.status)} |",
        f"| 摘要 Summary | {md(facts.summary)} |",
    ]
    if facts.valid_until is not None:
        lines.append(f"| 有效期至 Valid until | {facts.valid_until.isoformat()} |")
    if facts.fee_saved is not None:
        lines.append(f"| 可节省 Fee saved | ¥{facts.fee_saved:.2f} |")
    for warning in facts.warnings:
        lines += ["", f"> **注意 Warning:** {md(warning.zh)} {md(warning.en)}"]
    for note in facts.notes:
        lines += ["", f"> {md(note.zh)} {md(note.en)}"]
    lines.append("")
    if facts.decision is Decision.RECOGNIZABLE:
        lines.append(
            "采纳后删除本次重复医嘱并记入节省费用；如需复查，请不采纳并选择理由。"
            " Accepting removes the duplicate order and books the saving; to test again, "
            "override the card with a reason."
        )
    else:
        lines.append(
            "该结果已被开具医院撤回，不能作为互认依据，请按需开具检查。"
            " The issuing hospital withdrew this result: it cannot be recognised; order "
            "the test as needed."
        )
    return "\n".join(lines)


_MD_SPECIAL = set("\\`*_[]<>|~#!")


def md(text: str) -> str:
    """Text from elsewhere, safe inside Markdown (and a table cell): no markup, one line."""
    flat = " ".join(text.split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in flat)


def _links(facts: CardFacts, base: str) -> list[dict[str, str]]:
    links = [
        {"label": "互认工作台 Doctor's page", "url": f"{base}doctor", "type": "absolute"},
    ]
    if facts.result_url:
        label = "查看影像 Images" if facts.imaging else "查看既往报告 Prior report"
        links.append({"label": label, "url": facts.result_url, "type": "absolute"})
    return links


def patient_view_card(
    *, results: int, hospitals: Sequence[str], latest: date | None, base_url: str
) -> dict[str, Any]:
    """The one quiet card of patient-view: other hospitals hold recent results."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    when = f"（最近 {latest.isoformat()}）" if latest else ""
    names = "、".join(hospitals[:5]) + ("等" if len(hospitals) > 5 else "")
    text = (
        f"互认提示：该患者在其他医院有 {results} 份近期检查检验结果{when}，开单前可查看。"
        f" {results} recent result(s) at other hospitals"
    )
    return {
        "summary": fit(text),
        "indicator": "info",
        "detail": (
            f"其他医院（{md(names)}）有该患者 {results} 份近期结果，开具检查检验时 mrb 会逐项"
            "判断能否互认。\n\nOther hospitals hold recent results for this patient; when "
            "you order a test mrb says whether one of them may be recognised instead."
        ),
        "source": {"label": SOURCE_LABEL, "url": f"{base}doctor", "topic": dict(TOPIC)},
        "links": [
            {"label": "互认工作台 Doctor's page", "url": f"{base}doctor", "type": "absolute"}
        ],
    }
