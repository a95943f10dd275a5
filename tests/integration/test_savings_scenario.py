"""A month in a city network: the reports equal sums computed by hand, to the fen.

24 patients with blood counts from H001 or H003 are checked at H002 or H001 in May
2026. Doctors accept, decline (with and without reasons), retry and race. May is
closed; a late acceptance and a withdrawal then book into June, a correction is
flagged. Every figure below is written out here, not derived from the code under test.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from broker.bootstrap import Container
from broker.demo.dataset import resident_id_check_digit
from broker.domain.actors import Actor, Role
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.domain.registry import Certification, CertifyingBody
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.services.reports import regulator, savings, yuan
from broker.storage import hospitals, ledger
from tests import factories as f

CST = timezone(timedelta(hours=8))
HB = Order(system="http://loinc.org", code="718-7")
PLT = Order(system="http://loinc.org", code="777-3")
# catalog.yaml: LAB-HGB and LAB-PLT cost 6.00 at tier 3 (H001) and 5.40 at tier 2 (H002).
FEE = {"H001": Decimal("6.00"), "H002": Decimal("5.40")}
N = 24


def resident_id(i: int) -> str:
    first17 = f"51050219800101{i:03d}"
    return first17 + resident_id_check_digit(first17)


def source(i: int) -> str:
    return "H001" if i % 2 == 0 else "H003"


def orderer(i: int) -> str:
    return "H002" if i % 2 == 0 else "H001"


def in_may(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 5, day, hour, tzinfo=CST)


async def setup(c: Container) -> None:
    async with c.sessions() as s, s.begin():
        await hospitals.add(
            s, hospitals.Hospital("H003", "H003", "510503", "3", grade="甲", ownership="private")
        )
        await hospitals.add_key(s, "H003", f.key_id("H003"), f.public_b64("H003"))
        for h in ("H001", "H003"):
            await hospitals.certify(
                s,
                Certification(
                    h,
                    "HEMATOLOGY",
                    CertifyingBody.PROVINCIAL_EQA,
                    date(2026, 1, 1),
                    date(2026, 12, 31),
                ),
                reference=None,
            )
    batch = [
        f.inbound(
            f.lab_bundle(
                accession=f"ACC-{i}",
                pat=f.patient(national_id=resident_id(i), mrn=f"M{i}", pid=f"p{i}"),
            ),
            source(i),
        )
        for i in range(N)
    ]
    assert {p.outcome.value for p in await c.ingest_service().process_batch(batch)} == {"indexed"}


def doctor(i: int) -> Actor:
    return Actor(f"dr-{i % 3}", Role.DOCTOR, orderer(i))


async def test_a_month_of_recognitions_reconciles_to_the_fen(container: Container) -> None:
    c = container
    await setup(c)
    checks: dict[int, str] = {}
    for i in range(N):
        answer = await run_check(
            c.check_uow(),
            c.reference_rules(),
            CheckRequest(f.NATIONAL, resident_id(i), orderer(i), in_may(20, 9), (HB, PLT)),
            doctor(i),
            now=in_may(20, 9),
        )
        assert [a.decision.decision.value for a in answer.items] == ["RECOGNIZABLE"] * 2, i
        checks[i] = answer.check_id

    # Hand-kept books: (ordering hospital, month) -> yuan; declines by reason.
    saved: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    reversed_: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    declines: Counter[str] = Counter()

    async def send(i: int, *reqs: OutcomeRequest, at: datetime) -> None:
        await record_outcomes(
            c.outcome_uow(), c.reference_rules().catalog, checks[i], reqs, doctor(i), now=at
        )

    acc = OutcomeInput(OutcomeKind.ACCEPTED)
    for i in range(N):
        at = in_may(20 + i % 10)
        if i % 4 == 0:  # both accepted; sent twice (a retry), and i == 0 by six racing clients
            reqs = (OutcomeRequest(0, acc), OutcomeRequest(1, acc))
            copies = 6 if i == 0 else 2
            await asyncio.gather(*(send(i, *reqs, at=at) for _ in range(copies)))
            saved[(orderer(i), "2026-05")] += 2 * FEE[orderer(i)]
        elif i % 4 == 1:  # haemoglobin accepted, platelets declined as fast-changing
            reqs = (
                OutcomeRequest(0, acc),
                OutcomeRequest(1, OutcomeInput(OutcomeKind.DECLINED, DeclineReason.RAPID_CHANGE)),
            )
            await send(i, *reqs, at=at)
            await send(i, *reqs, at=at)
            saved[(orderer(i), "2026-05")] += FEE[orderer(i)]
            declines["RAPID_CHANGE"] += 1
        elif i % 4 == 2:  # both declined: condition changed, and an override without reason
            await send(
                i,
                OutcomeRequest(
                    0, OutcomeInput(OutcomeKind.DECLINED, DeclineReason.CONDITION_CHANGED)
                ),
                OutcomeRequest(1, OutcomeInput(OutcomeKind.DECLINED)),
                at=at,
            )
            declines["CONDITION_CHANGED"] += 1
            declines["UNKNOWN"] += 1
        else:  # haemoglobin accepted; platelets left open for now
            await send(i, OutcomeRequest(0, acc), at=at)
            saved[(orderer(i), "2026-05")] += FEE[orderer(i)]

    async with c.sessions() as s, s.begin():
        assert await ledger.close_period(s, "2026-05", "finance-zhao", datetime.now(UTC))

    # Late May outcome after the close: books into June.
    await send(3, OutcomeRequest(1, acc), at=in_may(31, 23))
    saved[(orderer(3), "2026-06")] += FEE[orderer(3)]
    # Patient 1's report (from H003, recognised at H001) is withdrawn: reversed in June.
    await c.ingest_service().process_batch(
        [
            f.inbound(
                f.lab_bundle(
                    accession="ACC-1",
                    status="entered-in-error",
                    last_updated="2026-06-02T09:00:00+08:00",
                    version="2",
                    pat=f.patient(national_id=resident_id(1), mrn="M1", pid="p1"),
                ),
                source(1),
            )
        ]
    )
    reversed_[(orderer(1), month_now())] += FEE[orderer(1)]
    # Patient 4's report is corrected: flagged (both accepted items), not reversed.
    await c.ingest_service().process_batch(
        [
            f.inbound(
                f.lab_bundle(
                    accession="ACC-4",
                    status="corrected",
                    hb=10.1,
                    last_updated="2026-06-02T09:00:00+08:00",
                    version="2",
                    pat=f.patient(national_id=resident_id(4), mrn="M4", pid="p4"),
                ),
                source(4),
            )
        ]
    )

    async with c.report_figures() as s:
        by_hospital = await savings(s, "hospital")
        may = await savings(s, "hospital", period_from="2026-05", period_to="2026-05-31")
        by_month = await savings(s, "month")
        by_item = await savings(s, "item")
        report = await regulator(s, "2026-05")
        by_source = await savings(s, "source")
        enabled_may = await savings(s, "source", period_from="2026-05", period_to="2026-05")

    for hospital in ("H001", "H002"):
        row = by_hospital.rows[hospital]
        want_saved = sum(v for (h, _), v in saved.items() if h == hospital)
        want_reversed = sum(v for (h, _), v in reversed_.items() if h == hospital)
        assert Decimal(row.saved_fen) / 100 == want_saved
        assert Decimal(row.reversed_fen) / 100 == want_reversed
        assert Decimal(may.rows[hospital].saved_fen) / 100 == saved[(hospital, "2026-05")]
    # H002 ordered for the even patients: 6 x 2 accepted items at 5.40 (the other 6 declined
    # both); H001 for the odd ones: 6 + 6 + 1 late items at 6.00, one of them reversed.
    assert Decimal(by_hospital.rows["H002"].saved_fen) / 100 == Decimal("64.80")
    assert Decimal(by_hospital.rows["H001"].saved_fen) / 100 == Decimal("78.00")
    assert Decimal(by_hospital.totals.net_fen) / 100 == Decimal("64.80") + Decimal("72.00")
    assert by_hospital.totals.recognitions == 12 + 6 + 6 + 1
    assert by_hospital.totals.reversals == 1 and by_hospital.totals.flagged == 2
    assert by_hospital.totals.declines == dict(declines)
    assert (
        by_month.rows["2026-05"].recognitions == 24 and by_month.rows["2026-06"].recognitions == 1
    )
    assert by_month.rows[month_now()].reversals == 1
    # The other side of each saving: the hospital whose result was recognised. H002 ordered
    # on H001's results and H001 on H003's, so each side's figures mirror the other's; H003
    # ordered nothing, yet its results saved H001 as much as H001 saved.
    assert by_source.totals.net_fen == by_hospital.totals.net_fen
    assert by_source.rows["H001"].net_fen == by_hospital.rows["H002"].net_fen
    assert by_source.rows["H003"].net_fen == by_hospital.rows["H001"].net_fen
    assert "H003" not in by_hospital.rows and "H002" not in by_source.rows
    for row in report.as_dict()["hospitals"]:
        enabled = enabled_may.rows.get(row["hospital"])
        assert row["enabled_elsewhere"]["saved_for_others"] == yuan(
            enabled.saved_fen if enabled else 0
        )
    # Groups always add up to the totals, however grouped.
    for report_ in (by_hospital, by_month, by_item):
        assert sum(r.net_fen for r in report_.rows.values()) == report_.totals.net_fen
        assert sum(r.declined for r in report_.rows.values()) == report_.totals.declined
    assert set(by_item.rows) == {"LAB-HGB", "LAB-PLT"}

    lab = report.by_category["LAB"]
    assert (lab.lookups, lab.cross_hospital_lookups, lab.recognizable) == (48, 48, 48)
    assert lab.recognitions == 24 and lab.declines == dict(declines)
    assert report.by_hospital["H003"].lookups == 0  # H003 only supplied results
    assert {x["hospital"] for x in report.certified} == {"H001", "H003"}
    csv_rows = report.as_csv().splitlines()
    assert csv_rows[-1].startswith("total,") and len(csv_rows) == 1 + 3 + 6 + 1


def month_now() -> str:
    """Reversals book when the withdrawal arrives: the test's real month (May is closed)."""
    now = datetime.now(CST)
    return "2026-06" if now.strftime("%Y-%m") == "2026-05" else now.strftime("%Y-%m")
