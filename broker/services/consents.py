"""Consent and opt-out, and the break-glass report (issue "Patient rights").

A doctor of a hospital that holds results of the patient records what the patient signed
there: an opt-out of cross-hospital sharing (PIPL Art. 44) or a consent to share one
sensitive category (PIPL Art. 29; 艾滋病防治条例 Art. 39), with the evidence reference and
an expiry; and withdraws it. Each change is audited and takes effect on the next request
(every read asks broker.ports.consent.ConsentReader afresh).

A break-glass read (an emergency with a reason, broker.domain.purposes) is audited with the
purpose `break-glass` by the read itself; `note_break_glass` counts it for the alert, and
`break_glass_report` lists them for the security administrator (and the auditor).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from broker.domain.actors import Actor, Duty, Forbidden
from broker.domain.catalog import Catalog
from broker.domain.consent import ConsentKind, ConsentRecord, check_new
from broker.domain.errors import Invalid, NotAllowed, NotFound
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier, PatientIdentifier
from broker.domain.sensitivity import SensitivityTable
from broker.observability import BREAK_GLASS_READS
from broker.ports.consent import AuditRow, ConsentUnitOfWork

logger = logging.getLogger(__name__)

NOT_YOURS = (
    "mrb holds no results of this patient from your hospital: a consent or opt-out is "
    "recorded, withdrawn and read by a hospital where the patient has records"
)


REPORT_ZONE = ZoneInfo("Asia/Shanghai")  # days of the break-glass report, as the access report
REPORT_DAYS = 30  # the default period: the last 30 days, today included


def report_period(
    start: date | None, end: date | None, *, today: date | None = None
) -> tuple[datetime, datetime]:
    """Days [start, end) in Asia/Shanghai as instants; by default the last 30 days."""
    last = today or datetime.now(REPORT_ZONE).date()
    end = end or last + timedelta(days=1)
    start = start or end - timedelta(days=REPORT_DAYS)
    return (
        datetime.combine(start, time(), REPORT_ZONE),
        datetime.combine(end, time(), REPORT_ZONE),
    )


def note_break_glass(actor: Actor, channel: str) -> None:
    """Count a break-glass read for the alert and log it (never the patient or the reason)."""
    BREAK_GLASS_READS.labels(channel).inc()
    logger.warning("break-glass read: %s/%s (%s)", actor.hospital, actor.name, channel)


def hidden_codes(
    table: SensitivityTable, catalog: Catalog, consented: frozenset[str]
) -> frozenset[tuple[str, str]]:
    """The (system, code) pairs that hide a result from another hospital, once the
    categories in `consented` are shared (broker.fhir filters the index by them)."""
    kept = tuple(c for c in table.categories if c.code not in consented)
    return SensitivityTable(kept, table.version).index_codes(catalog)


def hidden_codes_for(
    table: SensitivityTable, catalog: Catalog
) -> Callable[[frozenset[str]], frozenset[tuple[str, str]]]:
    """`hidden_codes` bound to a table, remembered per set of consented categories."""
    memo: dict[frozenset[str], frozenset[tuple[str, str]]] = {}

    def of(consented: frozenset[str]) -> frozenset[tuple[str, str]]:
        if consented not in memo:
            memo[consented] = hidden_codes(table, catalog, consented)
        return memo[consented]

    return of


@dataclass(frozen=True)
class NewConsent:
    patient_system: str
    patient_value: str
    kind: ConsentKind
    evidence: str
    category: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class PatientConsents:
    person_id: str
    records: tuple[ConsentRecord, ...]


class ConsentService:
    def __init__(
        self,
        uow: Callable[[], ConsentUnitOfWork],
        identifiers: IdentifierRegistry,
        sensitivity: SensitivityTable,
    ) -> None:
        self._uow = uow
        self._identifiers = identifiers
        self._sensitivity = sensitivity

    def category_names(self) -> dict[str, str]:
        return {c.code: f"{c.name_zh} ({c.name_en})" for c in self._sensitivity.categories}

    def _identifier(self, system: str, value: str, hospital: str) -> PatientIdentifier:
        try:
            ident = self._identifiers.lookup(system, value, hospital=hospital)
        except InvalidIdentifier as exc:
            raise Invalid("Invalid patient identifier", str(exc)) from None
        if ident is None:
            raise Invalid("Invalid patient identifier", "the patient identifier has no value")
        return ident

    @staticmethod
    def _authorize(actor: Actor, duty: Duty) -> None:
        try:
            actor.authorize(duty)
        except Forbidden as exc:
            raise NotAllowed("Forbidden", str(exc)) from None

    async def record(
        self, actor: Actor, new: NewConsent, *, now: datetime | None = None
    ) -> ConsentRecord:
        """Record an opt-out or a consent at the doctor's hospital, audited."""
        self._authorize(actor, Duty.CONSENTS)
        now = now or datetime.now(UTC)
        why = check_new(
            new.kind,
            new.category,
            new.evidence,
            new.expires_at,
            now,
            (c.code for c in self._sensitivity.categories),
        )
        if why is not None:
            raise Invalid("Invalid consent", why)
        ident = self._identifier(new.patient_system, new.patient_value, actor.hospital)
        async with self._uow() as uow:
            person_id = await uow.people.find(ident)
            if person_id is None or not await uow.people.has_records_at(person_id, actor.hospital):
                raise NotFound("Patient not found", NOT_YOURS)
            record = ConsentRecord(
                id=str(uuid.uuid4()),
                person_id=person_id,
                kind=new.kind,
                category=new.category,
                recorded_by=actor.name,
                recorded_hospital=actor.hospital,
                recorded_at=now,
                evidence=new.evidence.strip(),
                expires_at=new.expires_at,
                recorded_role=actor.role.value,
            )
            await uow.records.add(record)
            await uow.audit.record_change(
                actor,
                action="consent.record",
                person_id=person_id,
                detail={
                    "consent_id": record.id,
                    "kind": record.kind.value,
                    "category": record.category,
                    "expires": record.expires_at.isoformat() if record.expires_at else None,
                },
            )
            await uow.commit()
        return record

    async def withdraw(
        self, actor: Actor, consent_id: str, *, now: datetime | None = None
    ) -> ConsentRecord:
        """Withdraw a record (idempotent): it counts for nothing from the next request on."""
        self._authorize(actor, Duty.CONSENTS)
        now = now or datetime.now(UTC)
        async with self._uow() as uow:
            record = await uow.records.get(consent_id)
            person_id = await uow.people.survivor(record.person_id) if record else None
            if (
                record is None
                or person_id is None
                or not await uow.people.has_records_at(person_id, actor.hospital)
            ):
                raise NotFound("Consent not found", f"no consent {consent_id[:40]!r}: {NOT_YOURS}")
            if record.withdrawn_at is not None:
                return record
            await uow.records.withdraw(record.id, actor.name, now)
            await uow.audit.record_change(
                actor,
                action="consent.withdraw",
                person_id=person_id,
                detail={"consent_id": record.id, "kind": record.kind.value},
            )
            await uow.commit()
        return ConsentRecord(**{**record.__dict__, "withdrawn_at": now, "withdrawn_by": actor.name})

    async def of_patient(
        self,
        actor: Actor,
        *,
        identifier: tuple[str, str] | None = None,
        person_id: str | None = None,
        purpose: str = "treatment",
        action: str = "consent.read",
        detail: dict[str, object] | None = None,
    ) -> PatientConsents | None:
        """The patient's records, for a doctor of a hospital holding their results; None for
        any other caller, exactly as for a patient mrb does not know. Audited either way."""
        self._authorize(actor, Duty.CONSENTS)
        ident = self._identifier(*identifier, actor.hospital) if identifier else None
        async with self._uow() as uow:
            found = await uow.people.find(ident) if ident else None
            if person_id is not None and ident is None:
                found = await uow.people.survivor(person_id)
            mine = found is not None and await uow.people.has_records_at(found, actor.hospital)
            records = await uow.records.of_person(found) if mine and found else []
            await uow.audit.record_read(
                actor,
                action=action,
                purpose=purpose,
                patient=ident,
                person_id=found if mine else None,
                detail={**(detail or {}), "returned": len(records)},
            )
            await uow.commit()
        if not mine or found is None:
            return None
        return PatientConsents(found, tuple(records))

    async def one(
        self, actor: Actor, consent_id: str, *, purpose: str = "treatment"
    ) -> tuple[ConsentRecord, str] | None:
        """One record and its (surviving) person, for a doctor of a hospital holding the
        patient's results; None for anybody else, as for an id never issued. Audited."""
        self._authorize(actor, Duty.CONSENTS)
        async with self._uow() as uow:
            record = await uow.records.get(consent_id)
            person_id = await uow.people.survivor(record.person_id) if record else None
            mine = person_id is not None and await uow.people.has_records_at(
                person_id, actor.hospital
            )
            await uow.audit.record_read(
                actor,
                action="fhir-read",
                purpose=purpose,
                patient=None,
                person_id=person_id if mine else None,
                detail={
                    "resource": f"Consent/{consent_id[:40]}",
                    "outcome": "read" if mine else "not-found",
                },
            )
            await uow.commit()
        if not mine or record is None or person_id is None:
            return None
        return record, person_id

    async def break_glass_report(
        self, actor: Actor, start: datetime, end: datetime
    ) -> Sequence[AuditRow]:
        """Break-glass reads in [start, end), oldest first; producing it is audited."""
        self._authorize(actor, Duty.BREAK_GLASS_REPORT)
        if end <= start:
            raise Invalid("Invalid period", "`to` must be after `from`")
        async with self._uow() as uow:
            rows = await uow.audit.break_glass(start, end)
            await uow.audit.record_read(
                actor,
                action="audit.break-glass-report",
                purpose="audit",
                patient=None,
                person_id=None,
                detail={"from": start.isoformat(), "to": end.isoformat(), "entries": len(rows)},
            )
            await uow.commit()
        return rows
