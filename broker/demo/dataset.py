"""Deterministic synthetic multi-hospital data set that `mrb demo` publishes through Kafka.

Everything derives from (now, seed): the same pair gives byte-identical messages, and a
different `now` only moves the dates. The data set tells the product's story: patients
repeat the same tests at several hospitals, results get amended (sometimes arriving
before their original) or withdrawn, one message is re-sent, and about ten deliberately
bad messages show the dead-letter path with the exact code each one must get.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from broker.demo import bad_messages
from broker.demo.catalog_sample import (
    FAMILY_NAMES,
    GIVEN_CHARS,
    IMAGING_KINDS,
    LAB_PANELS,
    LOCAL_CODE_HOSPITAL,
    ImagingKind,
    LabPanel,
)
from broker.demo.fhir_build import (
    CST,
    Person,
    ResultPlan,
    Site,
    Version,
    det_uuid,
    render,
    routing_key,
)
from mrb_wire import resident_id
from mrb_wire.fhir import RECOGNITION_MARK_URL
from mrb_wire.fhir import RESIDENT_ID_SYSTEM as NATIONAL_ID_SYSTEM

__all__ = [
    "NATIONAL_ID_SYSTEM",
    "RECOGNITION_MARK_URL",
    "DemoDataset",
    "DemoHospital",
    "DemoMessage",
    "DemoPatient",
    "demo_hospitals",
    "generate",
    "resident_id_check_digit",
]

FHIR_R4_JSON = "application/fhir+json; fhirVersion=4.0"


@dataclass(frozen=True)
class DemoHospital:
    id: str  # "H001", "H002", ...
    name: str
    region: str  # GB/T 2260 six-digit code
    level: str  # "3" | "2" | "1" (三级/二级/一级)


@dataclass(frozen=True)
class DemoMessage:
    hospital: str  # mrb-hospital header (an unregistered id for one bad message)
    message_id: str
    key: bytes  # opaque per patient + hospital, never an identifier
    value: bytes
    expect: str  # "indexed" | "rejected"
    expect_code: str | None  # DLQ code when rejected
    note: str  # English, free of patient data
    content_type: str = FHIR_R4_JSON


@dataclass(frozen=True)
class DemoPatient:
    national_id: str
    hospitals: tuple[str, ...]


@dataclass(frozen=True)
class DemoDataset:
    hospitals: tuple[DemoHospital, ...]
    patients: tuple[DemoPatient, ...]
    messages: tuple[DemoMessage, ...]


_HOSPITALS = (
    DemoHospital("H001", "泸州市人民医院", "510502", "3"),
    DemoHospital("H002", "西南医科大学附属医院", "510504", "3"),
    DemoHospital("H003", "泸州市纳溪区人民医院", "510503", "2"),
    DemoHospital("H004", "南京市鼓楼区宁海路社区卫生服务中心", "320106", "1"),
)
_HOME_WEIGHTS = (35, 30, 25, 10)
_CR_HOSPITALS = frozenset({"H003", "H004"})  # smaller hospitals still run CR for chest films
_PROVINCE_MARKS = {"32": "苏HR"}  # hospitals outside Sichuan carry their province's mark
_ITEMS: tuple[LabPanel | ImagingKind, ...] = (*LAB_PANELS, *IMAGING_KINDS)
_Item = tuple[LabPanel | ImagingKind, str | None]  # a test and, for a knee, its side

# Shares and counts the demo story relies on (tests check them).
MULTI_HOSPITAL_SHARE = 0.45
MRN_ONLY_SHARE = 0.10
AMENDED, CORRECTED, OUT_OF_ORDER = 6, 2, 3
PRELIMINARY = 4
TRANSACTIONS, ZONELESS, LOCAL_CODED = 12, 6, 8


def demo_hospitals() -> tuple[DemoHospital, ...]:
    """Three Luzhou hospitals of levels 3, 3, 2 and one level-1 centre in Nanjing."""
    return _HOSPITALS


def resident_id_check_digit(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character of an 18-digit resident ID (GB 11643)."""
    return resident_id.check_character(first17)


def recognition_mark(hospital: DemoHospital) -> str | None:
    province = hospital.region[:2]
    if province in _PROVINCE_MARKS:
        return _PROVINCE_MARKS[province]
    return {"3": "全国HR", "2": "泸州HR"}.get(hospital.level)


DEFAULT_SEED = 20260520


def generate(*, now: datetime, seed: int = DEFAULT_SEED, patients: int = 240) -> DemoDataset:
    """Build the whole data set; pure function of its arguments."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if patients < 20:
        raise ValueError("the demo story needs at least 20 patients")
    base = now.astimezone(CST).replace(second=0, microsecond=0)
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not a secret
    sites = {h.id: _site(h) for h in _HOSPITALS}
    people, results = _plan(rng, base, patients, sites)
    versions, out_of_order = _revise(rng, base, results)
    slots = _order(rng, versions, out_of_order)
    valid = _render_valid(rng, seed, slots, out_of_order)
    extra: Counter[str] = Counter()

    def make_lab(person: Person, site: Site, panel: LabPanel) -> ResultPlan:
        return _result(rng, base, person, site, panel, _days_ago(rng), None, extra)

    bad = [
        DemoMessage(b.hospital, "", b.key, b.value, "rejected", b.code, b.note, b.content_type)
        for b in bad_messages.build(seed, base, people, sites, make_lab)
    ]
    messages = _interleave(rng, seed, valid, bad)
    demo_patients = tuple(DemoPatient(p.national_id, tuple(sorted(p.mrns))) for p in people)
    return DemoDataset(_HOSPITALS, demo_patients, messages)


def _site(h: DemoHospital) -> Site:
    return Site(h.id, h.name, int(h.id[1:]), recognition_mark(h), h.id in _CR_HOSPITALS)


# --- planning: who had which test where and when -------------------------------------


def _plan(
    rng: random.Random, base: datetime, count: int, sites: dict[str, Site]
) -> tuple[list[Person], list[ResultPlan]]:
    multi = set(rng.sample(range(count), round(count * MULTI_HOSPITAL_SHARE)))
    taken: set[str] = set()
    mrns_taken: set[str] = set()
    counters: Counter[str] = Counter()
    pending: list[_Item] = [
        (i, side)
        for i in _ITEMS
        for side in (("left", "right") if isinstance(i, ImagingKind) and i.lateral else (None,))
    ]
    rng.shuffle(pending)

    def fresh() -> _Item:
        # Every panel and imaging kind (both knees) appears at least once, whatever the seed.
        if pending:
            return pending.pop()
        item = rng.choices(_ITEMS, weights=[i.weight for i in _ITEMS])[0]
        lateral = isinstance(item, ImagingKind) and item.lateral
        return item, rng.choice(("left", "right")) if lateral else None

    people: list[Person] = []
    results: list[ResultPlan] = []
    for index in range(count):
        home = rng.choices(_HOSPITALS, weights=_HOME_WEIGHTS)[0]
        visited = [home.id]
        if index in multi:
            others = [h.id for h in _HOSPITALS if h.id != home.id]
            visited += rng.sample(others, 2 if rng.random() < 0.3 else 1)
        person = _person(rng, index, home.region, visited, taken, mrns_taken)
        mine = _patient_results(rng, base, person, visited, sites, counters, fresh)
        registered = {
            h: min(r.collected for r in mine if r.site.id == h) - timedelta(hours=2)
            for h in visited
        }
        person = dataclasses.replace(person, registered=registered)
        people.append(person)
        results += [dataclasses.replace(r, person=person) for r in mine]
    return people, _flag(rng, results)


def _person(
    rng: random.Random,
    index: int,
    region: str,
    visited: list[str],
    taken: set[str],
    mrns_taken: set[str],
) -> Person:
    span = (date(2015, 12, 31) - date(1940, 1, 1)).days
    while True:
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(span + 1))
        sequence = rng.randrange(1, 1000)
        first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
        if first17 not in taken:
            taken.add(first17)
            break
    mrns = {}
    for h in visited:
        while (mrn := f"{h}-{rng.randrange(100000, 1000000)}") in mrns_taken:
            pass
        mrns_taken.add(mrn)
        mrns[h] = mrn
    given = "".join(rng.choice(GIVEN_CHARS) for _ in range(rng.choice((1, 2, 2))))
    return Person(
        index=index,
        national_id=first17 + resident_id_check_digit(first17),
        family=rng.choice(FAMILY_NAMES),
        given=given,
        gender="male" if sequence % 2 else "female",  # 17th digit: odd for men
        birth_date=birth.isoformat(),
        mrns=mrns,
        registered={},
    )


def _patient_results(
    rng: random.Random,
    base: datetime,
    person: Person,
    visited: list[str],
    sites: dict[str, Site],
    counters: Counter[str],
    fresh: Callable[[], _Item],
) -> list[ResultPlan]:
    total = max(len(visited), rng.choices(range(1, 7), weights=(25, 25, 20, 14, 9, 7))[0])
    where = visited + [rng.choice(visited) for _ in range(total - len(visited))]
    done: list[tuple[LabPanel | ImagingKind, int, str | None, str]] = []  # + days, hospital
    out = []
    for hospital in where:
        # Repeating a test already done elsewhere is the situation mrb exists for.
        elsewhere = [d for d in done if d[3] != hospital]
        if elsewhere and rng.random() < 0.7:
            item, prior_days, side, _ = rng.choice(elsewhere)
            days = min(400, max(0, prior_days + rng.choice((-1, 1)) * rng.randint(1, 30)))
        elif done and rng.random() < 0.3:
            item, prior_days, side, _ = rng.choice(done)
            days = min(400, prior_days + rng.randint(7, 90))
        else:
            item, side = fresh()
            days = _days_ago(rng)
        done.append((item, days, side, hospital))
        out.append(_result(rng, base, person, sites[hospital], item, days, side, counters))
    return out


def _days_ago(rng: random.Random) -> int:
    return rng.randint(0, 60) if rng.random() < 0.8 else rng.randint(61, 400)


def _result(
    rng: random.Random,
    base: datetime,
    person: Person,
    site: Site,
    item: LabPanel | ImagingKind,
    days: int,
    side: str | None,
    counters: Counter[str],
) -> ResultPlan:
    lab = isinstance(item, LabPanel)
    collected = _collected(rng, base, days, lab)
    issued = collected + timedelta(hours=rng.randint(1, 3), minutes=rng.randrange(0, 60, 5))
    recorded = issued + timedelta(minutes=rng.randint(1, 30))
    counters[site.id] += 1
    # No date inside identifiers: a different `now` must move the dates and nothing else.
    accession = f"{'L' if lab else 'R'}{site.number:02d}{counters[site.id]:07d}"
    plan = ResultPlan(
        key=f"{site.id}-{accession}",
        person=person,
        site=site,
        collected=collected,
        issued=issued,
        recorded=recorded,
        accession=accession,
        item=item,
    )
    if isinstance(item, LabPanel):
        return dataclasses.replace(plan, values=_values(rng, item, person.gender))
    instances = tuple(rng.randint(*item.instances) for _ in range(rng.randint(*item.series)))
    return dataclasses.replace(
        plan,
        laterality=side,
        instances=instances,
        conclusion=rng.choice(item.conclusions),
        with_report=rng.random() < 0.9,
    )


def _collected(rng: random.Random, base: datetime, days: int, lab: bool) -> datetime:
    if days == 0:  # today: keep it a few hours in the past so every later time is too
        return base - timedelta(hours=rng.randint(5, 9), minutes=rng.randrange(0, 60, 5))
    day = (base - timedelta(days=days)).date()
    hour = rng.randint(7, 10) if lab else rng.randint(8, 17)  # blood is drawn in the morning
    return datetime(day.year, day.month, day.day, hour, rng.randrange(0, 60, 5), tzinfo=CST)


def _values(rng: random.Random, panel: LabPanel, gender: str) -> tuple[float | bool, ...]:
    values: list[float | bool] = []
    for a in panel.analytes:
        if a.qualitative:
            values.append(rng.random() < 0.07)  # roughly China's HBsAg carrier rate
            continue
        low, high = a.female if a.female and gender == "female" else (a.low, a.high)
        roll = rng.random()
        if roll < 0.8 or (roll >= 0.9 and low == 0):
            x = rng.uniform(max(low, high * 0.1), high)
        elif roll < 0.9:
            x = high * rng.uniform(1.05, 1.8)
        else:
            x = low * rng.uniform(0.6, 0.95)
        values.append(float(round(x, a.decimals)))
    return tuple(values)


def _flag(rng: random.Random, results: list[ResultPlan]) -> list[ResultPlan]:
    """Mark a few results for the less common wire shapes."""

    def pick(pool: list[ResultPlan], n: int) -> set[str]:
        return {r.key for r in rng.sample(pool, min(n, len(pool)))}

    transaction = pick(results, TRANSACTIONS)
    zoneless = pick([r for r in results if r.site.id == "H003"], ZONELESS)
    local = pick(
        [
            r
            for r in results
            if r.site.id == LOCAL_CODE_HOSPITAL
            and isinstance(r.item, LabPanel)
            and all(a.local_code for a in r.item.analytes)
        ],
        LOCAL_CODED,
    )
    return [
        dataclasses.replace(
            r,
            transaction=r.key in transaction,
            zoneless=r.key in zoneless,
            local_codes=r.key in local,
        )
        for r in results
    ]


# --- versions and arrival order --------------------------------------------------------


def _revise(
    rng: random.Random, base: datetime, results: list[ResultPlan]
) -> tuple[list[Version], set[str]]:
    """Version 1 of every result plus amendments and withdrawals as version 2."""
    old = [r for r in results if base - r.recorded >= timedelta(days=1)]
    amendable = [
        r for r in old if isinstance(r.item, LabPanel) and not r.item.analytes[0].qualitative
    ]
    chosen = rng.sample(amendable, AMENDED + CORRECTED)
    # Withdraw results that are the patient's only one of that test, so the demo shows a
    # WITHDRAWN decision rather than an older valid result taking its place.
    seen = Counter((r.person.index, r.item.key) for r in results)
    only = [r for r in amendable if seen[(r.person.index, r.item.key)] == 1 and r not in chosen]
    chosen += rng.sample(only, 3)
    taken = {c.key for c in chosen}
    studies = [r for r in old if isinstance(r.item, ImagingKind) and r.key not in taken]
    chosen.append(rng.choice(studies))
    statuses = (
        ["amended"] * AMENDED
        + ["corrected"] * CORRECTED
        + ["entered-in-error", "cancelled", "cancelled", "entered-in-error"]
    )
    # A few of the newest lab results are still preliminary (初步报告): never recognised.
    recent = sorted(
        (r for r in results if isinstance(r.item, LabPanel) and r.key not in taken),
        key=lambda r: r.recorded,
    )[-PRELIMINARY:]
    pending = {r.key for r in recent}
    versions = [
        Version(r, 1, "preliminary" if r.key in pending else "final", r.recorded, r.values)
        for r in results
    ]
    for r, status in zip(chosen, statuses, strict=True):
        values, changed = r.values, None
        if status in ("amended", "corrected"):
            changed = rng.randrange(len(r.values))
            values = _changed(rng, r, changed)
        versions.append(Version(r, 2, status, _later(rng, base, r.recorded), values, changed))
    return versions, {r.key for r in chosen[:OUT_OF_ORDER]}


def _changed(rng: random.Random, r: ResultPlan, i: int) -> tuple[float | bool, ...]:
    decimals = r.item.analytes[i].decimals if isinstance(r.item, LabPanel) else 0
    old = float(r.values[i])
    new = float(round(old * rng.choice((0.8, 0.9, 1.1, 1.25)), decimals))
    if new == old:
        new = float(round(old + 10.0**-decimals, decimals))
    return (*r.values[:i], new, *r.values[i + 1 :])


def _later(rng: random.Random, base: datetime, after: datetime) -> datetime:
    moment = after + (base - after) * rng.uniform(0.1, 0.9)
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class _Slot:
    version: Version
    duplicate: bool = False


def _order(rng: random.Random, versions: list[Version], out_of_order: set[str]) -> list[_Slot]:
    """Shuffle, then put each version 2 after its original (or before, when out of order)."""
    order = list(versions)
    rng.shuffle(order)
    where = {(v.result.key, v.number): i for i, v in enumerate(order)}
    for (key, number), second in list(where.items()):
        if number != 2:
            continue
        first = where[(key, 1)]
        if (second < first) != (key in out_of_order):
            order[first], order[second] = order[second], order[first]
            where[(key, 1)], where[(key, 2)] = second, first
    slots = [_Slot(v) for v in order]
    revised = {v.result.key for v in versions if v.number == 2}
    original = rng.choice([i for i, s in enumerate(slots) if s.version.result.key not in revised])
    slots.insert(rng.randint(original + 1, len(slots)), _Slot(slots[original].version, True))
    return slots


def _render_valid(
    rng: random.Random, seed: int, slots: list[_Slot], out_of_order: set[str]
) -> list[DemoMessage]:
    # The MRN alone identifies a patient only once the hospital has sent the ID number.
    seen: set[tuple[int, str]] = set()
    eligible: list[int] = []
    for i, slot in enumerate(slots):
        r = slot.version.result
        pair = (r.person.index, r.site.id)
        if pair in seen and not slot.duplicate:
            eligible.append(i)
        seen.add(pair)
    target = round(len(slots) * MRN_ONLY_SHARE)
    mrn_only = set(rng.sample(eligible, min(target, len(eligible))))
    rendered: dict[tuple[str, int], tuple[bytes, bool]] = {}
    messages = []
    for i, slot in enumerate(slots):
        v, r = slot.version, slot.version.result
        ident = (r.key, v.number)
        if not slot.duplicate:  # a duplicate re-sends its original's bytes
            rendered[ident] = (render(v, seed, national_id=i not in mrn_only), i in mrn_only)
        value, mrn = rendered[ident]
        note = _note(v, slot.duplicate, mrn, r.key in out_of_order)
        messages.append(
            DemoMessage(
                r.site.id,
                "",
                routing_key(seed, r.site.id, r.person.index),
                value,
                "indexed",
                None,
                note,
            )
        )
    return messages


def _note(v: Version, duplicate: bool, mrn_only: bool, out_of_order: bool) -> str:
    r = v.result
    note = r.note if v.number == 1 else f"{v.status} {r.note}"
    extras = []
    if out_of_order:
        extras.append("sent before original" if v.number == 2 else "original, arrives late")
    if duplicate:
        extras.append("exact duplicate re-send")
    if mrn_only:
        extras.append("MRN only")
    if r.zoneless:
        extras.append("zone-less times")
    if r.transaction:
        extras.append("transaction bundle")
    if r.local_codes:
        extras.append("hospital-local codes")
    if isinstance(r.item, ImagingKind) and not r.with_report:
        extras.append("no report")
    return f"{note} ({', '.join(extras)})" if extras else note


def _interleave(
    rng: random.Random, seed: int, valid: list[DemoMessage], bad: list[DemoMessage]
) -> tuple[DemoMessage, ...]:
    """Spread the bad messages evenly; number every message by its final position."""
    rng.shuffle(bad)
    total = len(valid) + len(bad)
    positions = {(k + 1) * total // (len(bad) + 1): m for k, m in enumerate(bad)}
    pending = iter(valid)
    out = []
    for i in range(total):
        message = positions.get(i) or next(pending)
        out.append(dataclasses.replace(message, message_id=det_uuid(seed, "message", i)))
    return tuple(out)
