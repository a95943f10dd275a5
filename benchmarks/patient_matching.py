"""Patient matching on a synthetic population: blocking, scoring, precision and recall.

`python -m benchmarks.patient_matching [--people 10000] [--seed N] [--write-doc]`
generates households of people (Chinese names by surname frequency, twins, shared family
phones, addresses in a few cities), gives each person 1-4 records at different hospitals
with realistic noise, compares every pair that shares a block with the shipped rules
(schemas/identity/matching.yaml) and prints pairs compared, reduction ratio,
automatic-match precision and recall, review load and time. `--write-doc` puts the
figures into docs/patient-matching.md; `--estimate` prints m/u estimated from the
population (the values in matching.yaml were estimated so, on another seed).
Every share below is a synthetic-test assumption, not a measured statistic.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import cast

from pypinyin import lazy_pinyin

from broker.domain.matching import (
    COMPARATOR_LEVELS,
    BlockIndex,
    Decision,
    Demographics,
    MatchingRules,
    Prepared,
    compare,
    prepare,
)
from broker.reference.matching_rules import shipped_matching_rules

PRECISION_FLOOR = 0.999  # automatic matches, as the issue asks
DEFAULT_SEED = 20261203
ESTIMATION_SEED = 1  # m/u in matching.yaml come from this seed; the figures from DEFAULT_SEED
DOC = Path(__file__).resolve().parents[1] / "docs" / "patient-matching.md"
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"

# The most common surnames, most common first; shares (%) are rounded synthetic-test
# values in the order commonly published for mainland China (unverified), plus two
# compound surnames so the splitter is exercised.
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.1), ("李", 7.0), ("张", 6.7), ("刘", 5.4), ("陈", 4.6), ("杨", 3.1), ("黄", 2.4),
    ("赵", 2.3), ("吴", 2.0), ("周", 1.9), ("徐", 1.6), ("孙", 1.5), ("马", 1.5), ("朱", 1.3),
    ("胡", 1.3), ("郭", 1.2), ("何", 1.2), ("林", 1.1), ("高", 1.1), ("罗", 1.0), ("郑", 0.9),
    ("梁", 0.9), ("谢", 0.8), ("宋", 0.8), ("唐", 0.8), ("许", 0.7), ("韩", 0.7), ("冯", 0.7),
    ("邓", 0.7), ("曹", 0.6), ("彭", 0.6), ("曾", 0.6), ("肖", 0.6), ("田", 0.5), ("董", 0.5),
    ("袁", 0.5), ("潘", 0.5), ("于", 0.5), ("蒋", 0.5), ("蔡", 0.5), ("余", 0.5), ("杜", 0.4),
    ("叶", 0.4), ("程", 0.4), ("苏", 0.4), ("魏", 0.4), ("吕", 0.4), ("丁", 0.4), ("任", 0.4),
    ("沈", 0.4), ("欧阳", 0.05), ("司马", 0.02),
)  # fmt: skip
# Pinyin-only systems spell a surname as read as a surname (曾 ZENG), where lazy_pinyin's
# common reading differs (ceng).
SURNAME_PINYIN = {"曾": "zeng"}
# Given-name characters, with homophone groups (same toneless pinyin) on purpose.
GIVEN_CHARS = (
    "伟玮炜维薇静晶婧菁杰洁捷丽莉俐立明铭鸣华桦艳燕雁军君俊婷亭鹏朋磊蕾强芳方娜秀英莹颖"
    "刚平萍海涛霞浩昊皓宇雨语玉子梓紫轩萱宣涵寒晗欣新心馨怡宜佳嘉家思博文雯建健剑国志智"
    "勇林琳霖慧惠辉红宏鸿春晓小一诗雪梅兰云芸辰晨睿瑞泽航宁凝阳洋飞菲婉琪琦棋安天峰锋斌"
    "彬超波东冬凯亮龙玲灵倩雅悦越月然欢"
)
CITIES = (
    ("四川省", "成都市", ("武侯区", "锦江区", "青羊区", "金牛区", "成华区")),
    ("四川省", "泸州市", ("江阳区", "龙马潭区", "纳溪区")),
    ("江苏省", "南京市", ("玄武区", "秦淮区", "鼓楼区", "建邺区")),
    ("北京市", "北京市", ("朝阳区", "海淀区", "东城区", "西城区", "丰台区")),
)
# Road names, two characters each.
ROADS = tuple(re.findall("..", "人民建设解放中山和平长江黄河新华光明胜利文化友谊滨江锦绣天府青年"))
HOSPITALS = tuple(f"H{n:03d}" for n in range(1, 13))
# Systems that send names in pinyin only, each in its own spelling of the order.
PINYIN_HOSPITALS = {"H005": "upper", "H009": "title_given_first", "H011": "joined"}


def _homophones() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for c in dict.fromkeys(GIVEN_CHARS):
        groups.setdefault(lazy_pinyin(c)[0], []).append(c)
    return {c: [h for h in g if h != c] for g in groups.values() for c in g if len(g) > 1}


HOMOPHONES = _homophones()


@dataclass
class Person:
    pid: int
    family: str
    given: str
    sex: str
    birth: date
    phone: str | None
    address: str
    household: int
    old_phone: str | None = None
    new_address: str | None = None
    twin_of: int | None = None


@dataclass
class Population:
    people: list[Person]
    records: list[tuple[int, Demographics]]  # (person id, record)
    noise: Counter[str] = field(default_factory=Counter)


def _mobile(rng: random.Random) -> str:
    return rng.choice(("13", "15", "18", "17")) + "".join(rng.choices("0123456789", k=9))


def _given(rng: random.Random) -> str:
    return "".join(rng.choices(GIVEN_CHARS, k=1 if rng.random() < 0.3 else 2))


def _address(rng: random.Random) -> str:
    province, city, districts = rng.choice(CITIES)
    head = province if province == city else province + city
    return (
        f"{head}{rng.choice(districts)}{rng.choice(ROADS)}路{rng.randint(1, 300)}号"
        f"{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元"
        f"{rng.randint(1, 30)}{rng.randint(1, 4):02d}室"
    )


def _birth(rng: random.Random, first: int, last: int) -> date:
    start = date(first, 1, 1)
    return start + timedelta(days=rng.randrange((date(last, 12, 31) - start).days + 1))


def _surname(rng: random.Random) -> str:
    names, shares = zip(*SURNAMES, strict=True)
    return str(rng.choices(names, weights=shares)[0])


def generate_people(count: int, rng: random.Random) -> list[Person]:
    """Households (single, couple, with children and a grandparent) until `count` people."""
    people: list[Person] = []
    household = 0

    def add(family: str, sex: str, birth: date, phone: str | None, address: str) -> Person:
        p = Person(len(people), family, _given(rng), sex, birth, phone, address, household)
        if rng.random() < 0.10:  # the number on file at some hospitals is an earlier one
            p.old_phone = _mobile(rng)
        if rng.random() < 0.06:
            p.new_address = _address(rng)
        people.append(p)
        return p

    while len(people) < count:
        household += 1
        address = _address(rng)
        kind = rng.choices(("single", "couple", "family"), weights=(25, 25, 50))[0]
        if kind == "single":
            add(_surname(rng), rng.choice("MF"), _birth(rng, 1940, 2005), _mobile(rng), address)
            continue
        father = add(_surname(rng), "M", _birth(rng, 1945, 1998), _mobile(rng), address)
        mother_born = father.birth + timedelta(days=rng.randint(-5 * 365, 5 * 365))
        mother = add(_surname(rng), "F", mother_born, _mobile(rng), address)
        if kind == "couple":
            continue
        if rng.random() < 0.2:  # a grandparent without a phone of their own
            born = father.birth - timedelta(days=rng.randint(22 * 365, 35 * 365))
            add(father.family, rng.choice("MF"), born, father.phone, address)
        for _ in range(rng.choices((1, 2), weights=(75, 25))[0]):
            born = mother.birth + timedelta(days=rng.randint(22 * 365, 38 * 365))
            if born > date(2025, 12, 31):
                continue
            family = father.family if rng.random() < 0.9 else mother.family
            # Children under 16 are reached on a parent's phone.
            phone = mother.phone if born.year > 2010 else _mobile(rng)
            child = add(family, rng.choice("MF"), born, phone, address)
            if rng.random() < 0.03:  # about 1 % of people are twins
                twin = add(family, child.sex if rng.random() < 0.6 else rng.choice("MF"),
                           born, phone, address)  # fmt: skip
                if len(child.given) == 2 and rng.random() < 0.6:  # 子涵 / 子轩
                    sounds = {child.given[1], *HOMOPHONES.get(child.given[1], ())}
                    twin.given = child.given[0] + rng.choice(
                        [c for c in GIVEN_CHARS if c not in sounds]
                    )
                # Twins' names are told apart when spoken: never homophones of each other.
                while lazy_pinyin(twin.given) == lazy_pinyin(child.given):
                    twin.given = _given(rng)
                twin.twin_of, child.twin_of = child.pid, twin.pid
    return people[:count]


def _noisy_given(given: str, rng: random.Random, noise: Counter[str]) -> str:
    i = rng.randrange(len(given))
    r = rng.random()
    if r < 0.04 and given[i] in HOMOPHONES:
        noise["homophone character"] += 1
        return given[:i] + rng.choice(HOMOPHONES[given[i]]) + given[i + 1 :]
    if r < 0.06:
        same = {given[i], *HOMOPHONES.get(given[i], ())}
        noise["typo character"] += 1
        return given[:i] + rng.choice([c for c in GIVEN_CHARS if c not in same]) + given[i + 1 :]
    return given


def _noisy_birth(birth: date, rng: random.Random, noise: Counter[str]) -> date | None:
    r = rng.random()
    if r < 0.01:
        noise["birth date missing"] += 1
        return None
    if r < 0.02 and birth.day <= 12 and birth.day != birth.month:
        noise["day and month swapped"] += 1
        return date(birth.year, birth.day, birth.month)
    if r < 0.04:
        noise["birth date typo"] += 1
        part = rng.choice(("year", "month", "day"))
        with_typo: date | None = None
        while with_typo is None or with_typo == birth:
            try:
                if part == "year":
                    with_typo = birth.replace(year=birth.year + rng.choice((-10, -1, 1, 10)))
                elif part == "month":
                    with_typo = birth.replace(month=rng.randint(1, 12))
                else:
                    with_typo = birth.replace(day=rng.randint(1, 28))
            except ValueError:  # 29 February in another year
                with_typo = birth.replace(day=28)
        return with_typo
    return birth


def _phone_as_sent(phone: str, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 1:
        return f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}"
    if style == 2:
        return f"0086{phone}"
    return f"{phone[:3]} {phone[3:7]} {phone[7:]}" if style == 3 else phone


def _address_as_sent(address: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:  # without province and city
        return re.sub(r"^.*?市(?=.+区)", "", address)
    if r < 0.5:  # without the room
        return re.sub(r"\d+室$", "", address)
    if r < 0.55:  # a typo in the building number
        return re.sub(r"\d+栋", lambda m: f"{int(m.group()[:-1]) % 30 + 1}栋", address)
    return address


def _named(family: str, given: str, hospital: str, rng: random.Random) -> Demographics:
    """A record holding only the name, as `hospital` spells it."""
    style = PINYIN_HOSPITALS.get(hospital)
    if style is None:
        if rng.random() < 0.5:
            return Demographics(family=family, given=given)
        return Demographics(full_name=family + (" " if rng.random() < 0.1 else "") + given)
    sur = SURNAME_PINYIN.get(family) or "".join(lazy_pinyin(family))
    giv = "".join(lazy_pinyin(given))
    if style == "upper":
        return Demographics(full_name=f"{sur} {giv}".upper())
    if style == "title_given_first":
        return Demographics(full_name=f"{giv.title()} {sur.title()}")
    return Demographics(full_name=(sur + giv).upper())


def make_record(p: Person, hospital: str, rng: random.Random, noise: Counter[str]) -> Demographics:
    """One hospital's record of `p`, with that hospital's spelling and random noise."""
    phone = p.old_phone if p.old_phone and rng.random() < 0.5 else p.phone
    if phone is not None and rng.random() < 0.15:
        noise["phone missing"] += 1
        phone = None
    address: str | None = p.new_address if p.new_address and rng.random() < 0.5 else p.address
    if rng.random() < 0.25:
        noise["address missing"] += 1
        address = None
    sex: str | None = "male" if p.sex == "M" else "female"
    r = rng.random()
    if r < 0.02:
        sex = None
    elif r < 0.022:
        noise["sex wrong"] += 1
        sex = "female" if p.sex == "M" else "male"
    return replace(
        _named(p.family, _noisy_given(p.given, rng, noise), hospital, rng),
        sex=sex,
        birth_date=_noisy_birth(p.birth, rng, noise),
        phone=_phone_as_sent(phone, rng) if phone else None,
        address=_address_as_sent(address, rng) if address else None,
    )


def generate_population(people: int, seed: int) -> Population:
    """`people` people with 1-4 records each at different hospitals (seeded)."""
    rng = random.Random(seed)
    persons = generate_people(people, rng)
    noise: Counter[str] = Counter()
    records = []
    for p in persons:
        count = rng.choices((1, 2, 3, 4), weights=(35, 35, 20, 10))[0]
        for hospital in rng.sample(HOSPITALS, count):
            records.append((p.pid, make_record(p, hospital, rng, noise)))
    return Population(persons, records, noise)


# ---------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Evaluation:
    people: int
    records: int
    twins: int
    pairs_total: int
    pairs_compared: int
    true_pairs: int
    true_pairs_blocked: int
    decided: Counter[tuple[Decision, bool]]
    false_match_kinds: Counter[str]
    true_pairs_held: Counter[str]  # true pairs kept from MATCH, by the reason
    seconds: float

    @property
    def reduction_ratio(self) -> float:
        return 1 - self.pairs_compared / self.pairs_total if self.pairs_total else 1.0

    def count(self, decision: Decision, true: bool | None = None) -> int:
        return sum(n for (d, t), n in self.decided.items() if d is decision and true in (None, t))

    @property
    def precision(self) -> float:
        links = self.count(Decision.MATCH)
        return self.count(Decision.MATCH, True) / links if links else 1.0

    @property
    def recall(self) -> float:
        return self.count(Decision.MATCH, True) / self.true_pairs if self.true_pairs else 1.0


def candidate_pairs(prepared: Sequence[Prepared], rules: MatchingRules) -> set[tuple[int, int]]:
    """Every pair of records that share a block no larger than the rules' limit."""
    index = BlockIndex(rules)
    for i, p in enumerate(prepared):
        index.add(i, p)
    pairs: set[tuple[int, int]] = set()
    for block in index.blocks.values():
        if 1 < len(block) <= rules.max_block_size:
            pairs.update(itertools.combinations(sorted(cast(set[int], block)), 2))
    return pairs


def evaluate(population: Population, rules: MatchingRules) -> Evaluation:
    """Block, score every candidate pair, and count decisions against the truth."""
    started = time.perf_counter()
    owner = [pid for pid, _ in population.records]
    prepared = [prepare(r, rules) for _, r in population.records]
    pairs = candidate_pairs(prepared, rules)
    decided: Counter[tuple[Decision, bool]] = Counter()
    kinds: Counter[str] = Counter()
    held: Counter[str] = Counter()
    people = population.people
    for i, j in pairs:
        same = owner[i] == owner[j]
        result = compare(prepared[i], prepared[j], rules)
        decision = result.decision
        decided[decision, same] += 1
        if same and decision is not Decision.MATCH:
            held[result.hard_rules[0] if result.hard_rules else "total weight"] += 1
        if decision is Decision.MATCH and not same:
            a, b = people[owner[i]], people[owner[j]]
            kinds["twins" if a.twin_of == b.pid else
                  "same household" if a.household == b.household else "unrelated"] += 1  # fmt: skip
    per_person = Counter(owner)
    return Evaluation(
        people=len(people),
        records=len(prepared),
        twins=sum(p.twin_of is not None for p in people),
        pairs_total=len(prepared) * (len(prepared) - 1) // 2,
        pairs_compared=len(pairs),
        true_pairs=sum(n * (n - 1) // 2 for n in per_person.values()),
        true_pairs_blocked=sum(owner[i] == owner[j] for i, j in pairs),
        decided=decided,
        false_match_kinds=kinds,
        true_pairs_held=held,
        seconds=time.perf_counter() - started,
    )


def estimate(population: Population, rules: MatchingRules, sample: int = 400_000) -> str:
    """m (all pairs of one person's records) and u (random pairs of different people) per
    level, as YAML lines for matching.yaml. Add-one smoothing keeps rare levels finite."""
    rng = random.Random(0)
    owner = [pid for pid, _ in population.records]
    prepared = [prepare(r, rules) for _, r in population.records]
    by_person: dict[int, list[int]] = {}
    for i, pid in enumerate(owner):
        by_person.setdefault(pid, []).append(i)
    true = [pair for ids in by_person.values() for pair in itertools.combinations(ids, 2)]
    false: list[tuple[int, int]] = []
    while len(false) < sample:
        i, j = rng.randrange(len(owner)), rng.randrange(len(owner))
        if owner[i] != owner[j]:
            false.append((i, j))
    counts: dict[bool, Counter[tuple[str, str]]] = {True: Counter(), False: Counter()}
    for same, pairs in ((True, true), (False, false)):
        for i, j in pairs:
            for f in compare(prepared[i], prepared[j], rules).fields:
                counts[same][f.field, f.level] += 1
    lines = []
    for name, levels in COMPARATOR_LEVELS.items():
        lines.append(f"{name}:")
        for same, label in ((True, "m"), (False, "u")):
            total = sum(n for (f, lv), n in counts[same].items() if f == name and lv != "missing")
            for lv in levels:
                p = (counts[same][name, lv] + 1) / (total + len(levels))
                lines.append(f"  {lv}.{label}: {p:.3g}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Report


def report(e: Evaluation, seed: int) -> str:
    """The figures as a markdown table."""
    possible = e.count(Decision.POSSIBLE_MATCH)
    possible_true = e.count(Decision.POSSIBLE_MATCH, True)
    false_links = e.count(Decision.MATCH, False)
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(e.false_match_kinds.items())) or "none"
    held = ", ".join(f"{k}: {n}" for k, n in e.true_pairs_held.most_common()) or "none"
    rows = [
        ("seed", str(seed)),
        ("people / records / people who are twins", f"{e.people} / {e.records} / {e.twins}"),
        ("record pairs in total", f"{e.pairs_total:,}"),
        ("pairs compared (blocked)", f"{e.pairs_compared:,}"),
        ("reduction ratio", f"{e.reduction_ratio:.5f}"),
        ("true pairs / of them blocked together", f"{e.true_pairs:,} / {e.true_pairs_blocked:,}"),
        ("automatic matches (MATCH)", f"{e.count(Decision.MATCH):,}"),
        ("false automatic links", f"{false_links} ({kinds})"),
        ("automatic-match precision", f"{e.precision:.5f}"),
        ("automatic-match recall (of all true pairs)", f"{e.recall:.4f}"),
        ("possible matches (review load)", f"{possible:,}"),
        (
            "possible matches that are true",
            f"{possible_true:,} ({_share(possible_true, possible)})",
        ),
        ("true pairs left as NO_MATCH", f"{e.count(Decision.NO_MATCH, True):,}"),
        ("true pairs not matched, by reason", held),
        ("time (generation excluded)", f"{e.seconds:.1f} s"),
    ]
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def rules_table(rules: MatchingRules) -> str:
    """The shipped levels with m, u and weight, as markdown."""
    lines = ["| field | level | m | u | weight log2(m/u) |", "|---|---|---|---|---|"]
    for name, rule in rules.fields.items():
        for lv in rule.levels.values():
            lines.append(f"| {name} | {lv.name} | {lv.m:.6g} | {lv.u:.6g} | {lv.weight:+.2f} |")
    return "\n".join(lines)


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace the measured block of `path` (between the markers) by `text`."""
    block = f"{BEGIN}\n{text}\n{END}"
    old = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else f"# Patient matching\n\n{BEGIN}\n{END}\n"
    )
    if BEGIN not in old or END not in old:
        old = f"{old.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    path.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.patient_matching")
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--write-doc", action="store_true", help=f"update {DOC.name}")
    parser.add_argument("--estimate", action="store_true", help="print m/u from the population")
    args = parser.parse_args(argv)
    rules = shipped_matching_rules()
    started = time.perf_counter()
    population = generate_population(args.people, args.seed)
    generated = time.perf_counter() - started
    if args.estimate:
        print(estimate(population, rules))
        return 0
    result = evaluate(population, rules)
    table = report(result, args.seed)
    print(table)
    print(f"generation: {generated:.1f} s; noise: {dict(sorted(population.noise.items()))}")
    if args.write_doc:
        noise = ", ".join(f"{k} {n}" for k, n in sorted(population.noise.items()))
        write_doc(
            f"Measured {date.today().isoformat()} with rules {rules.version}, "
            f"`python -m benchmarks.patient_matching --people {args.people} --seed {args.seed}`"
            f" (one core). Automatic-match precision {result.precision:.5f} "
            f"{'meets' if result.precision >= PRECISION_FLOOR else 'MISSES'} the floor of "
            f"{PRECISION_FLOOR}.\n\n{table}\n\nNoise injected in this run (records): {noise}.\n\n"
            f"Rules as shipped:\n\n{rules_table(rules)}\n\nMATCH at a total weight ≥ "
            f"{rules.match_threshold:g}, POSSIBLE_MATCH at ≥ {rules.possible_threshold:g}."
        )
    return 0 if result.precision >= PRECISION_FLOOR else 1


if __name__ == "__main__":
    raise SystemExit(main())
