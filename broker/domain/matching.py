"""Probabilistic patient matching on demographics (Fellegi–Sunter), pure.

Results that carry no resident ID still name a patient: name (characters or pinyin), sex,
birth date, phone, address. Two records are compared field by field; each field lands on
a comparison level whose weight is log2(m/u) (m: how often the level is seen between two
records of one person, u: between records of different people), a missing value weighs
0, and the total against two thresholds gives MATCH, POSSIBLE_MATCH or NO_MATCH. Hard
rules then force or cap the decision (two different trusted identifiers are never one
person; twins are never an automatic match). Levels, m/u, thresholds, blocking keys and
hard rules are data (schemas/identity/matching.yaml, loaded by
broker/reference/matching_rules.py); this module only knows how to compare.
POSSIBLE_MATCH never links by itself: it goes to a person's review.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from pypinyin import lazy_pinyin
from rapidfuzz.distance import JaroWinkler

from broker.domain.demographics import Demographics as Demographics
from mrb_wire import resident_id


class Decision(StrEnum):
    """What the engine decides for a pair; only MATCH may link automatically."""

    NO_MATCH = "NO_MATCH"
    POSSIBLE_MATCH = "POSSIBLE_MATCH"
    MATCH = "MATCH"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Decision.NO_MATCH: 0, Decision.POSSIBLE_MATCH: 1, Decision.MATCH: 2}

MISSING = "missing"  # the level of a field absent on either side; always weighs 0

# The comparison levels each comparator can return (besides `missing`), best first. The
# rules must give m and u for every one of them (checked by validate_rules).
COMPARATOR_LEVELS: Mapping[str, tuple[str, ...]] = {
    "name": ("exact", "homophone", "pinyin", "fuzzy", "surname", "disagree"),
    "birth_date": ("exact", "near", "disagree"),
    "sex": ("agree", "disagree"),
    "phone": ("exact", "disagree"),
    "address": ("high", "medium", "disagree"),
}
# The parameters each comparator reads from the rules.
COMPARATOR_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "name": ("jaro_winkler_min", "jaro_winkler_prefix_weight"),
    "address": ("high", "medium", "min_tokens"),
}
# Not weighed: trusted identifiers only feed the hard rules.
IDENTIFIER_LEVELS = ("agree", "conflict", MISSING)
BLOCKING_KEYS = ("birth_date", "surname_birth_year", "phone", "name_pinyin")


# ---------------------------------------------------------------------------------------
# Normalisation


# Two-character surnames, so that 欧阳娜娜 splits as 欧阳 + 娜娜 when sent unsplit.
_COMPOUND_SURNAMES = frozenset(
    [
        "欧阳",
        "司马",
        "上官",
        "诸葛",
        "东方",
        "皇甫",
        "尉迟",
        "公孙",
        "慕容",
        "长孙",
        "宇文",
        "司徒",
        "夏侯",
        "轩辕",
        "令狐",
        "端木",
        "独孤",
        "南宫",
    ]
)
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_LATIN_TOKEN = re.compile(r"[a-z]+")
_ADDRESS_PART = re.compile(
    r".+?(?:特别行政区|自治区|自治州|街道|小区|号楼|号院|省|市|区|县|镇|乡|路|街|巷|弄|村|号|栋|幢|楼|单元|室)"
)


_ABOVE_DISTRICT = ("省", "自治区", "特别行政区", "市")


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _letters(text: str) -> str:
    """Letters only (spaces, punctuation, the middle dot of 阿依·买买提 and digits dropped)."""
    return "".join(c for c in _nfkc(text) if unicodedata.category(c).startswith("L"))


def _latin_tokens(text: str) -> list[str]:
    # ü is written v by pypinyin (lazy_pinyin default) and by most HIS keyboards.
    return _LATIN_TOKEN.findall(_nfkc(text).replace("ü", "v"))


def _is_han(text: str) -> bool:
    return bool(text) and all(_HAN.fullmatch(c) for c in text)


@functools.lru_cache(maxsize=4096)
def _pinyin(han: str) -> str:
    # Cached: pypinyin's phrase segmentation is most of preparing a record at ingest, and
    # the same surnames and given names come again and again (a name part, not a person).
    return "".join(lazy_pinyin(han)).replace("ü", "v")


@dataclass(frozen=True)
class NormalName:
    """A name reduced for comparison: characters when sent so, the full-name pinyin in each
    order the name may have been written in, and the possible surnames (pinyin)."""

    han: str | None
    orders: frozenset[str]
    surnames: frozenset[str]


def normalise_name(
    family: str | None,
    given: str | None,
    full_name: str | None,
    surname_readings: Mapping[str, Sequence[str]] | None = None,
) -> NormalName | None:
    """The comparable name, None when no letters were sent. `surname_readings`: how a
    surname character is read as a surname where that differs (曾 zeng, not ceng), taken
    as well as the common reading."""
    fam, giv = _letters(family or ""), _letters(given or "")
    if not (fam or giv):
        whole = _letters(full_name or "")
        if _is_han(whole):
            cut = 2 if len(whole) > 2 and whole[:2] in _COMPOUND_SURNAMES else 1
            fam, giv = whole[:cut], whole[cut:]
        else:
            return _latin_full_name(full_name or "")
    if not (fam or giv):
        return None
    if _is_han(fam + giv):
        rest = _pinyin(giv)
        surs = frozenset({_pinyin(fam), *(surname_readings or {}).get(fam, ())})
        # The order is known for characters, but a pinyin copy may be written given-first.
        orders = frozenset(o for sur in surs for o in (sur + rest, rest + sur))
        return NormalName(fam + giv, orders, surs)
    sur, rest = "".join(_latin_tokens(fam)), "".join(_latin_tokens(giv))
    if not (sur or rest):
        return None
    # Split latin fields: some systems put the given name in the family field.
    return NormalName(None, frozenset({sur + rest, rest + sur}), frozenset({sur, rest} - {""}))


def _latin_full_name(text: str) -> NormalName | None:
    tokens = _latin_tokens(text)
    if not tokens:
        return None
    if "," in text:  # "ZHANG, WEI": family name first, by convention of the comma
        return NormalName(None, frozenset({"".join(tokens)}), frozenset({tokens[0]}))
    if len(tokens) == 1:  # "ZHANGWEI": order known (family first), split unknown
        return NormalName(None, frozenset(tokens), frozenset())
    orders = frozenset({"".join(tokens), "".join(reversed(tokens))})
    return NormalName(None, orders, frozenset({tokens[0], tokens[-1]}))


def normalise_phone(value: str | None) -> str | None:
    """Digits only, the country code (+86, 0086) dropped; None when fewer than 7 digits."""
    digits = "".join(c for c in _nfkc(value or "") if c.isascii() and c.isdigit())
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:  # 86 + an 11-digit mobile number
        digits = digits[2:]
    return digits if len(digits) >= 7 else None


def normalise_sex(value: str | None) -> str | None:
    """M or F (FHIR administrative gender male/female, M/F, 男/女); else unknown (None)."""
    v = _nfkc(value or "").strip()
    if v in {"male", "m", "男"}:
        return "M"
    if v in {"female", "f", "女"}:
        return "F"
    return None


def address_tokens(value: str | None) -> tuple[str, ...]:
    """The address cut after its administrative and street suffixes (省 市 区 路 号 单元 …)."""
    text = "".join(c for c in _nfkc(value or "") if c.isalnum())
    if not text:
        return ()
    parts = _ADDRESS_PART.findall(text)
    rest = text[sum(len(p) for p in parts) :]
    return (*parts, rest) if rest else tuple(parts)


def resident_id_key(value: str | None) -> str | None:
    """The resident ID as a trusted link key when its check character is right, else None:
    an ID with a typo must not veto (or make) a link; the demographics decide then."""
    return resident_id.canonical(value) if value else None


@dataclass(frozen=True)
class Prepared:
    """A record normalised once, for blocking and for every comparison it takes part in."""

    name: NormalName | None
    sex: str | None
    birth_date: date | None
    phone: str | None
    address: tuple[str, ...] | None  # tokens below the city (address_tokens)
    identifiers: Mapping[str, str] = field(default_factory=dict)


def prepare(record: Demographics, rules: MatchingRules | None = None) -> Prepared:
    """Normalise a record for matching (with the rules' surname readings, if given)."""
    tokens = address_tokens(record.address)
    # Province and city are compared no further: senders often leave them out, and the
    # district, street and number place an address on their own.
    while len(tokens) > 1 and tokens[0].endswith(_ABOVE_DISTRICT):
        tokens = tokens[1:]
    return Prepared(
        name=normalise_name(
            record.family,
            record.given,
            record.full_name,
            rules.surname_readings if rules is not None else None,
        ),
        sex=normalise_sex(record.sex),
        birth_date=record.birth_date,
        phone=normalise_phone(record.phone),
        address=tokens or None,
        identifiers=dict(record.identifiers),
    )


# ---------------------------------------------------------------------------------------
# Rules (built from schemas/identity/matching.yaml by broker/reference/matching_rules.py)


@dataclass(frozen=True)
class Level:
    """One comparison level with its m and u probabilities."""

    name: str
    m: float
    u: float

    @property
    def weight(self) -> float:
        """log2(m/u): the evidence this level gives for a match (Fellegi & Sunter 1969)."""
        return math.log2(self.m / self.u)


@dataclass(frozen=True)
class FieldRule:
    """How one field is compared: its levels and the comparator's parameters."""

    name: str
    levels: Mapping[str, Level]
    parameters: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HardRule:
    """When every field in `when` is at one of its levels: `decision` replaces the
    decision, or `cap` lowers it to at most that."""

    name: str
    when: Mapping[str, frozenset[str]]
    decision: Decision | None = None
    cap: Decision | None = None


@dataclass(frozen=True)
class MatchingRules:
    """Everything the engine decides by."""

    version: str
    blocking: tuple[str, ...]
    max_block_size: int
    fields: Mapping[str, FieldRule]
    match_threshold: float
    possible_threshold: float
    hard_rules: tuple[HardRule, ...] = ()
    surname_readings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def validate_rules(rules: MatchingRules) -> list[str]:
    """What is wrong with `rules` (empty when usable)."""
    problems = [f"unknown blocking key {k}" for k in rules.blocking if k not in BLOCKING_KEYS]
    for name, rule in rules.fields.items():
        expected = COMPARATOR_LEVELS.get(name)
        if expected is None:
            problems.append(f"unknown field {name}")
            continue
        missing = set(expected) - rule.levels.keys()
        extra = rule.levels.keys() - set(expected)
        problems += [f"{name}: no m/u for level {lv}" for lv in sorted(missing)]
        problems += [f"{name}: unknown level {lv}" for lv in sorted(extra)]
        needed = set(COMPARATOR_PARAMETERS.get(name, ()))
        problems += [f"{name}: no parameter {p}" for p in sorted(needed - rule.parameters.keys())]
        problems += [
            f"{name}: unknown parameter {p}" for p in sorted(rule.parameters.keys() - needed)
        ]
        for lv in rule.levels.values():
            if not (0 < lv.m <= 1 and 0 < lv.u <= 1):
                problems.append(f"{name}.{lv.name}: m and u must be in (0, 1]")
    if rules.possible_threshold > rules.match_threshold:
        problems.append("possible_match threshold above the match threshold")
    known = {**COMPARATOR_LEVELS, "identifier": IDENTIFIER_LEVELS}
    for hard in rules.hard_rules:
        for fld, levels in hard.when.items():
            allowed = set(known.get(fld, ())) | {MISSING}
            if fld not in known or not levels <= allowed:
                problems.append(f"hard rule {hard.name}: unknown {fld} level in {sorted(levels)}")
        if (hard.decision is None) == (hard.cap is None):
            problems.append(f"hard rule {hard.name}: give exactly one of decision and cap")
    return problems


# ---------------------------------------------------------------------------------------
# Comparators


def _name_level(a: NormalName, b: NormalName, params: Mapping[str, float]) -> str:
    if a.han is not None and a.han == b.han:
        return "exact"
    if a.orders & b.orders:
        # Both in characters: different characters that sound alike (张玮/张伟), a typo or
        # two people (twins named alike); else characters vs pinyin, or the word order.
        return "homophone" if a.han is not None and b.han is not None else "pinyin"
    jw = max(
        JaroWinkler.similarity(x, y, prefix_weight=params["jaro_winkler_prefix_weight"])
        for x in a.orders
        for y in b.orders
    )
    if jw >= params["jaro_winkler_min"]:
        return "fuzzy"
    if a.surnames & b.surnames:
        return "surname"
    return "disagree"


def _birth_date_level(a: date, b: date) -> str:
    if a == b:
        return "exact"
    same = (a.year == b.year) + (a.month == b.month) + (a.day == b.day)
    swapped = a.year == b.year and a.month == b.day and a.day == b.month
    return "near" if same == 2 or swapped else "disagree"


def _address_level(a: tuple[str, ...], b: tuple[str, ...], params: Mapping[str, float]) -> str:
    # Addresses are hierarchical (district, street, number, building, unit, room): what
    # counts is how far down they agree. A shorter address that agrees all the way (the room
    # left out) is as good as equal, once it reaches at least `min_tokens` (the number).
    agree = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        agree += 1
    similarity = agree / max(min(len(a), len(b)), params["min_tokens"])
    if similarity >= params["high"]:
        return "high"
    return "medium" if similarity >= params["medium"] else "disagree"


def _level(name: str, a: Prepared, b: Prepared, params: Mapping[str, float]) -> str:
    if name == "name":
        return MISSING if a.name is None or b.name is None else _name_level(a.name, b.name, params)
    if name == "birth_date":
        if a.birth_date is None or b.birth_date is None:
            return MISSING
        return _birth_date_level(a.birth_date, b.birth_date)
    if name == "sex":
        if a.sex is None or b.sex is None:
            return MISSING
        return "agree" if a.sex == b.sex else "disagree"
    if name == "phone":
        if a.phone is None or b.phone is None:
            return MISSING
        return "exact" if a.phone == b.phone else "disagree"
    if a.address is None or b.address is None:
        return MISSING
    return _address_level(a.address, b.address, params)


def identifier_level(a: Prepared, b: Prepared) -> str:
    """`conflict` when a shared system has different keys, `agree` when one is equal."""
    shared = a.identifiers.keys() & b.identifiers.keys()
    if any(a.identifiers[s] != b.identifiers[s] for s in shared):
        return "conflict"
    return "agree" if shared else MISSING


# ---------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class FieldScore:
    """One line of the explanation: a field, the level it reached and its weight."""

    field: str
    level: str
    weight: float


@dataclass(frozen=True)
class MatchResult:
    """The decision with its reasons: per-field levels and weights, the total, and the hard
    rules that changed the decision (in the order applied)."""

    decision: Decision
    total: float
    fields: tuple[FieldScore, ...]
    identifier: str
    hard_rules: tuple[str, ...]

    def level(self, name: str) -> str:
        """The level `name` reached (`missing` when it was not compared)."""
        return next((f.level for f in self.fields if f.field == name), MISSING)


def compare(a: Prepared, b: Prepared, rules: MatchingRules) -> MatchResult:
    """Score two prepared records and decide."""
    scores = []
    for name, rule in rules.fields.items():
        lv = _level(name, a, b, rule.parameters)
        weight = 0.0 if lv == MISSING else rule.levels[lv].weight
        scores.append(FieldScore(name, lv, round(weight, 3)))
    total = round(sum(s.weight for s in scores), 3)
    if total >= rules.match_threshold:
        decision = Decision.MATCH
    elif total >= rules.possible_threshold:
        decision = Decision.POSSIBLE_MATCH
    else:
        decision = Decision.NO_MATCH
    levels = {s.field: s.level for s in scores}
    levels["identifier"] = identifier_level(a, b)
    applied = []
    for hard in rules.hard_rules:
        if not all(levels.get(f, MISSING) in allowed for f, allowed in hard.when.items()):
            continue
        new = hard.decision or _lower(decision, hard.cap)
        if new != decision:
            decision = new
            applied.append(hard.name)
    return MatchResult(decision, total, tuple(scores), levels["identifier"], tuple(applied))


def _lower(decision: Decision, cap: Decision | None) -> Decision:
    return cap if cap is not None and cap.rank < decision.rank else decision


def match(a: Demographics, b: Demographics, rules: MatchingRules) -> MatchResult:
    """Compare two records as sent."""
    return compare(prepare(a, rules), prepare(b, rules), rules)


# ---------------------------------------------------------------------------------------
# Blocking


def blocking_keys(record: Prepared, keys: Iterable[str]) -> frozenset[str]:
    """The blocks a record falls in; records are compared only when they share one."""
    out: set[str] = set()
    for key in keys:
        if key == "birth_date" and record.birth_date is not None:
            out.add(f"bd:{record.birth_date.isoformat()}")
        elif key == "phone" and record.phone is not None:
            out.add(f"ph:{record.phone}")
        elif key == "surname_birth_year" and record.name and record.birth_date:
            year = record.birth_date.year
            out.update(f"sy:{s}:{year}" for s in record.name.surnames)
        elif key == "name_pinyin" and record.name is not None:
            out.update(f"np:{o}" for o in record.name.orders)
    return frozenset(out)


@dataclass(frozen=True)
class Candidate:
    """A record of the index compared with the one looked up."""

    record_id: Hashable
    result: MatchResult


class BlockIndex:
    """Records by blocking key, in memory (the evaluation, and tests; the database keeps
    its own). Blocks above `max_block_size` are not used to find candidates: a key shared
    by that many records (a hospital's switchboard number) says nothing about identity."""

    def __init__(self, rules: MatchingRules) -> None:
        self.rules = rules
        self.records: dict[Hashable, Prepared] = {}
        self.blocks: dict[str, set[Hashable]] = {}
        self._keys: dict[Hashable, frozenset[str]] = {}

    def add(self, record_id: Hashable, record: Demographics | Prepared) -> None:
        """Index a record (again: its old keys are dropped first)."""
        self.remove(record_id)
        prepared = record if isinstance(record, Prepared) else prepare(record, self.rules)
        keys = blocking_keys(prepared, self.rules.blocking)
        self.records[record_id] = prepared
        self._keys[record_id] = keys
        for k in keys:
            self.blocks.setdefault(k, set()).add(record_id)

    def remove(self, record_id: Hashable) -> None:
        """Forget a record (e.g. an unmerge that withdraws it)."""
        for k in self._keys.pop(record_id, frozenset()):
            block = self.blocks[k]
            block.discard(record_id)
            if not block:
                del self.blocks[k]
        self.records.pop(record_id, None)

    def blocked_with(self, record: Prepared) -> set[Hashable]:
        """The ids sharing a usable block with `record`."""
        found: set[Hashable] = set()
        for k in blocking_keys(record, self.rules.blocking):
            block = self.blocks.get(k, set())
            if len(block) <= self.rules.max_block_size:
                found |= block
        return found


def find_candidates(
    record: Demographics | Prepared, index: BlockIndex, *, exclude: Hashable = None
) -> list[Candidate]:
    """The indexed records blocked with `record`, scored, best first; NO_MATCH left out."""
    prepared = record if isinstance(record, Prepared) else prepare(record, index.rules)
    scored = (
        Candidate(rid, compare(prepared, index.records[rid], index.rules))
        for rid in index.blocked_with(prepared)
        if rid != exclude
    )
    kept = [c for c in scored if c.result.decision is not Decision.NO_MATCH]
    return sorted(kept, key=lambda c: (-c.result.total, str(c.record_id)))
