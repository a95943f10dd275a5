"""Answering CDS Hooks calls and recording feedback (the use cases behind the routes).

order-select / order-sign: the draft ServiceRequests the catalog knows become one
recognition check (broker.services.checks.run_check) for the EHR's hospital, as the
doctor in `context.userId`. Each draft order remembers its check item, so order-sign
reuses the check made at order-select for the same order (same day, same code, the
prior result unchanged) instead of making a second one; an item the doctor already
accepted or declined is not raised again.

The patient is found only from the EHR's Patient resource (prefetch, else a read on
`fhirServer`): a resident ID first, then the hospital's own identifiers. A patient mrb
has no results for gets no card and no check.

The use cases take their collaborators as one `CdsHooks` (built by broker/bootstrap.py,
fakes in tests/fakes.py) and work through units of work (broker/ports/cds.py): no
transaction is open while the EHR's FHIR server is read or the check runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from broker.cdshooks.auth import AuthenticatedClient
from broker.cdshooks.cards import (
    RECOGNITION,
    CardFacts,
    card_content,
    card_kind,
    issue,
    patient_view_card,
)
from broker.cdshooks.feedback import FeedbackRefused, to_outcome
from broker.cdshooks.models import Feedback, FeedbackRequest, HookRequest
from broker.cdshooks.orders import (
    FHIR_ID,
    InvalidDraftOrders,
    ResolvedOrder,
    parse_draft_orders,
    resolve,
    selected,
)
from broker.cdshooks.patients import (
    FhirServerNotAllowed,
    PatientSource,
    PatientUnavailable,
    identifiers,
    patient_resource,
)
from broker.cdshooks.services import ORDER_SELECT, PATIENT_VIEW, ServiceDefinition
from broker.domain.actors import Actor, Role
from broker.domain.catalog import ItemKind
from broker.domain.errors import Invalid, NotFound, PreconditionFailed
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier, PatientIdentifier
from broker.domain.ledger import OutcomeInput
from broker.domain.recognition import (
    RECOGNISABLE_STATUSES,
    REPORT_NOT_FINAL,
    PatientContext,
    Text,
    local_date,
)
from broker.domain.results import WITHDRAWN_STATUSES
from broker.ports.cds import CallAdmission, CdsUnitOfWork, DraftCheck, StoredCard
from broker.ports.check import CheckUnitOfWork
from broker.security.pseudonyms import Pseudonymiser
from broker.services.checks import CheckAnswer, CheckRequest, RulesSource, run_check
from broker.services.outcomes import OutcomeRequest, RecordedOutcome

# A check made at order-select is reused at order-sign within this time, on the same day.
REUSE_WITHIN = timedelta(hours=12)
NO_CARDS: dict[str, Any] = {"cards": []}
NOT_DOCTORS = ("Patient", "RelatedPerson")  # patient-portal users get no recognition advice
MAX_IDENTIFIERS = 4  # identifiers of one Patient tried (one per system), in the order given


class OutcomeRecorder(Protocol):
    """broker.services.outcomes.record_outcomes with its storage and catalog bound."""

    async def __call__(
        self,
        check_id: str,
        requests: Sequence[OutcomeRequest],
        actor: Actor,
        *,
        channel: str,
        now: datetime | None,
    ) -> list[RecordedOutcome]: ...


@dataclass(frozen=True)
class CdsHooks:
    """What the hook use cases work with (broker/bootstrap.py `Container.cds_hooks`)."""

    uow: Callable[[], CdsUnitOfWork]
    check_uow: Callable[[], CheckUnitOfWork]
    rules: RulesSource  # the catalog with run-time mappings, as the check uses it
    pseudonyms: Pseudonymiser
    identifiers: IdentifierRegistry  # as ingest links identifiers (Container.identifiers)
    admission: CallAdmission
    record_outcomes: OutcomeRecorder
    allow_http_loopback: bool = False  # MRB_CDS_ALLOW_HTTP_LOOPBACK: tests and development


@dataclass(frozen=True)
class HookCall:
    """Who calls (the authenticated EHR client), where mrb is, and the time of the call."""

    client: AuthenticatedClient
    base_url: str  # mrb's base URL as the EHR reaches it, ending in "/"
    now: datetime


@dataclass(frozen=True)
class _Issued:
    position: int  # the draft order's place in draftOrders
    card: dict[str, Any]


async def answer(
    hooks: CdsHooks,
    service: ServiceDefinition,
    request: HookRequest,
    caller: HookCall,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """The CDS Hooks response (`{"cards": [...]}`) for one call of `service`."""
    if request.hook != service.hook:
        raise Invalid(
            "Wrong hook", f"{service.id} answers the {service.hook} hook, not {request.hook}"
        )
    context = request.context
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not FHIR_ID.fullmatch(patient_id):
        raise Invalid("Invalid context", "context.patientId must be a FHIR Patient id")
    user_id = context.get("userId")
    if not isinstance(user_id, str) or not user_id.strip():
        raise Invalid("Invalid context", "context.userId is required (e.g. Practitioner/1)")
    if user_id.split("/", 1)[0] in NOT_DOCTORS:
        hooks.admission.refuse_deferred()
        return dict(NO_CARDS)
    actor = Actor(user_id.strip()[:200], Role.DOCTOR, caller.client.hospital)
    call = _Call(hooks, request, patient_id, actor, caller, transport)
    if service.hook == PATIENT_VIEW:
        cards = await _patient_view(call)
    else:
        cards = await _orders(call, service)
    await call.admit_nobody()  # a call that looked nobody up counts as a request
    return cards


@dataclass
class _Call:
    """One hook call, and whether its rate limits were counted yet (once per call: the
    doctor's request limit, the limits the API edge deferred, and the distinct patients
    looked up; urgent draft orders make it an emergency, never refused: break-glass)."""

    hooks: CdsHooks
    request: HookRequest
    patient_id: str
    actor: Actor
    caller: HookCall
    transport: httpx.AsyncBaseTransport | None
    admitted: bool = False

    async def admit(self, pseudonyms: Sequence[str], *, emergency: bool) -> None:
        self.admitted = True
        await self.hooks.admission.admit(self.actor, pseudonyms, emergency=emergency)

    async def admit_nobody(self) -> None:
        if not self.admitted:
            await self.admit((), emergency=False)


async def record_feedback(
    hooks: CdsHooks,
    service: ServiceDefinition,
    body: FeedbackRequest,
    caller: HookCall,
) -> dict[str, Any]:
    """Each feedback entry -> the card's check item outcome (idempotent; see feedback.py)."""
    if service.hook == PATIENT_VIEW:  # its card recommends nothing: nothing to record
        return {"feedback": [{"card": f.card, "recorded": "none"} for f in body.feedback]}
    async with hooks.uow() as uow:
        cards = await uow.cards.by_uuid([f.card for f in body.feedback])
    wanted: list[tuple[Feedback, StoredCard, OutcomeInput | None]] = []
    for f in body.feedback:
        row = cards.get(f.card)
        if row is None or row.service_id != service.id or row.issuer != caller.client.issuer:
            raise NotFound(
                "Unknown card",
                f"card {f.card!r} was not issued by {service.id} to this client",
            )
        if row.kind != RECOGNITION:
            wanted.append((f, row, None))
            continue
        try:
            wanted.append((f, row, to_outcome(f, row.suggestion_uuid)))
        except FeedbackRefused as exc:
            raise Invalid("Feedback refused", f"card {f.card!r}: {exc}") from None
    out: list[dict[str, Any]] = []
    for f, row, given in wanted:
        if given is None:
            out.append({"card": f.card, "outcome": f.outcome, "recorded": "none"})
            continue
        actor = Actor(row.user_id, Role.DOCTOR, row.hospital_id)
        (done,) = await hooks.record_outcomes(
            row.check_id,
            [OutcomeRequest(row.item_index, given)],
            actor,
            channel="cds-hooks",
            now=caller.now,
        )
        entry: dict[str, Any] = {
            "card": f.card,
            "outcome": f.outcome,
            "recorded": done.outcome.value,
            "replayed": done.replayed,
        }
        if done.reason:
            entry["reason"] = done.reason
        if done.saved is not None:
            entry["fee_saved"] = f"{done.saved:.2f}"
        out.append(entry)
    return {"feedback": out}


# -- order-select / order-sign --------------------------------------------------------------


async def _orders(call: _Call, service: ServiceDefinition) -> dict[str, Any]:
    hooks, caller, context = call.hooks, call.caller, call.request.context
    try:
        drafts = parse_draft_orders(context.get("draftOrders"), call.patient_id)
    except InvalidDraftOrders as exc:
        raise Invalid("Invalid draftOrders", str(exc)) from None
    if service.hook == ORDER_SELECT:
        selections = context.get("selections")
        if not isinstance(selections, list):
            raise Invalid("Invalid context", "order-select needs context.selections (an array)")
        drafts = selected(drafts, selections)
    hospital = caller.client.hospital
    async with hooks.uow() as uow:
        catalog = (await hooks.rules.current_rules(uow.mappings)).catalog
    resolved = [r for d in drafts if (r := resolve(d, catalog, hospital)) is not None]
    if not resolved:  # nothing mrb knows how to recognise: do not even look the patient up
        return dict(NO_CARDS)
    patient = await _identify(call, emergency=any(r.draft.urgent for r in resolved))
    if patient is None:
        return dict(NO_CARDS)
    idents, birth_date = patient
    async with hooks.uow() as uow:
        found = await _person(uow, idents)
        if found is None:
            return dict(NO_CARDS)
        ident, person = found
        pseudonym = hooks.pseudonyms.of(ident)
        # The patient's opt-out and consents (issue "Patient rights"), read afresh per call
        # in this step's session (nothing to read when the lookup found no record). A CDS
        # call is for treatment, asserted by the EHR's context; it never breaks the glass.
        consent = await uow.consents.view(person)
        stored = await uow.drafts.find(hospital, pseudonym, [r.draft.ref for r in resolved])
        # A check made before the patient's consent or opt-out changed is decided again.
        held_ok = [h for h in stored.values() if consent.unchanged_since(h.created_at)]
        usable = await _reusable(uow, held_ok, caller.now)
    positions = {r.draft.ref: i for i, r in enumerate(resolved)}
    reused: list[tuple[ResolvedOrder, DraftCheck]] = []
    fresh: list[ResolvedOrder] = []
    for r in resolved:
        held = stored.get((r.draft.ref, r.key))
        if held is not None and (held.check_id, held.item_index) in usable:
            reused.append((r, held))
        else:
            fresh.append(r)

    answer_: CheckAnswer | None = None
    if fresh:
        answer_ = await run_check(
            hooks.check_uow(),
            hooks.rules,
            CheckRequest(
                patient_system=ident.system,
                patient_value=ident.value,
                ordering_hospital=hospital,
                order_time=caller.now,
                items=tuple(r.order for r in fresh),
                emergency=any(r.draft.urgent for r in fresh),
                patient=PatientContext(birth_date),
            ),
            call.actor,
            now=caller.now,
        )

    issued: list[_Issued] = []
    async with hooks.uow() as uow:
        if answer_ is not None:
            facts = await _facts(uow, answer_, caller.base_url)
            for i, r in enumerate(fresh):
                check = DraftCheck(answer_.check_id, i, caller.now)
                await uow.drafts.remember(hospital, pseudonym, r.draft.ref, r.key, check)
                if i in facts:
                    content = card_content(
                        facts[i], draft_ref=r.draft.ref, base_url=caller.base_url
                    )
                    card = await _issue(uow, service, call, check, r.draft.ref, content)
                    issued.append(_Issued(positions[r.draft.ref], card))
        if reused:
            items = [(h.check_id, h.item_index) for _, h in reused]
            done = await uow.checks.decided({c for c, _ in items})
            last = await uow.cards.latest(items, hospital)
            for r, held in reused:
                key = (held.check_id, held.item_index)
                if key in done or key not in last:  # decided already, or nothing to say
                    continue
                card = await _issue(uow, service, call, held, r.draft.ref, last[key].content)
                issued.append(_Issued(positions[r.draft.ref], card))
        await uow.commit()
    issued.sort(key=lambda c: c.position)
    return {"cards": [c.card for c in issued]}


async def _issue(
    uow: CdsUnitOfWork,
    service: ServiceDefinition,
    call: _Call,
    check: DraftCheck,
    draft_ref: str,
    content: dict[str, Any],
) -> dict[str, Any]:
    """Give the card fresh uuids, store it (sealed) for feedback, and return it."""
    card_uuid = str(uuid.uuid4())
    suggestion_uuid = str(uuid.uuid4()) if content.get("suggestions") else None
    await uow.cards.add(
        StoredCard(
            uuid=card_uuid,
            suggestion_uuid=suggestion_uuid,
            service_id=service.id,
            issuer=call.caller.client.issuer,
            hospital_id=call.caller.client.hospital,
            user_id=call.actor.name,
            check_id=check.check_id,
            item_index=check.item_index,
            kind=RECOGNITION if content.get("suggestions") else "notice",
            draft_ref=draft_ref,
            content=content,
            created_at=call.caller.now,
        )
    )
    return issue(content, card_uuid, suggestion_uuid)


async def _reusable(
    uow: CdsUnitOfWork, held: Sequence[DraftCheck], now: datetime
) -> set[tuple[str, int]]:
    """The stored check items still good for this call: recent, today, result unchanged."""
    recent = [
        h
        for h in held
        if timedelta(0) <= now - h.created_at <= REUSE_WITHIN
        and local_date(h.created_at) == local_date(now)
    ]
    if not recent:
        return set()
    items = await uow.checks.items({h.check_id for h in recent})
    candidates = {
        items[h.check_id][h.item_index].candidate
        for h in recent
        if h.check_id in items and h.item_index < len(items[h.check_id])
    }
    states = await uow.results.states({c for c in candidates if c is not None})
    ok: set[tuple[str, int]] = set()
    for h in recent:
        stored = items.get(h.check_id)
        if stored is None or h.item_index >= len(stored):
            continue
        item = stored[h.item_index]
        if item.recognizable:
            now_is = states.get(item.candidate or "")
            if (
                now_is is None
                or now_is.status in WITHDRAWN_STATUSES
                or now_is.version != item.candidate_version
            ):
                continue  # the prior result changed since: decide again
        ok.add((h.check_id, h.item_index))
    return ok


async def _facts(uow: CdsUnitOfWork, answer_: CheckAnswer, base_url: str) -> dict[int, CardFacts]:
    """What each card-worthy item of a fresh check says, by item index."""
    worthy = {
        i: a
        for i, a in enumerate(answer_.items)
        if card_kind(a.decision.decision) is not None
        and a.decision.item is not None
        and a.decision.candidate is not None
    }
    if not worthy:
        return {}
    profiles = await uow.hospitals.profiles()
    states = await uow.results.states(
        {a.decision.candidate.result_id for a in worthy.values() if a.decision.candidate}
    )
    out: dict[int, CardFacts] = {}
    for i, a in worthy.items():
        d, c, item = a.decision, a.decision.candidate, a.decision.item
        assert c is not None and item is not None
        state = states.get(c.result_id)
        profile = profiles.get(c.hospital)
        out[i] = CardFacts(
            decision=d.decision,
            item=Text(item.name_zh, item.name_en),
            explanation=d.explanation,
            hospital=c.hospital,
            hospital_name=profile.name if profile else None,
            effective=local_date(c.effective) if c.effective else None,
            status=c.status,
            summary=c.summary,
            valid_until=d.valid_until,
            fee_saved=d.fee_saved,
            result_url=f"{base_url}fhir/{state.resource_type}/{c.result_id}" if state else None,
            imaging=item.kind is ItemKind.IMAGING,
            notes=d.notes,
            warnings=tuple(w.message for w in d.warnings),
        )
    return out


# -- the patient ---------------------------------------------------------------------------


async def _identify(
    call: _Call, *, emergency: bool
) -> tuple[list[PatientIdentifier], date | None] | None:
    """The identifiers to look the patient up by, and the EHR's birth date (for age-banded
    items); None: no Patient. Nothing is read from mrb's database here (`_person` does,
    in the caller's unit of work).

    The Patient is the prefetched one, else read from `fhirServer` only when that is a
    server registered for the client. The patient counts against the doctor's
    distinct-patient limit (by its first identifier) before mrb says whether it knows
    them; at most one identifier per system is tried, so one Patient padded with many
    resident IDs cannot probe many people.
    """
    hooks, request, caller = call.hooks, call.request, call.caller
    hospital = caller.client.hospital
    source = PatientSource(
        request.prefetch,
        request.fhirServer,
        request.fhirAuthorization,
        caller.client.fhir_servers,
        hooks.allow_http_loopback,
    )
    try:
        patient = await patient_resource(source, call.patient_id, transport=call.transport)
    except FhirServerNotAllowed as exc:
        await _audit_refused_server(call, request.fhirServer or "")
        raise PreconditionFailed(
            "Patient data unavailable",
            f"{exc}: prefetch 'patient' (Patient/{{{{context.patientId}}}}) or name a "
            "registered fhirServer",
        ) from None
    except PatientUnavailable as exc:
        raise PreconditionFailed(
            "Patient data unavailable",
            f"{exc}: prefetch 'patient' (Patient/{{{{context.patientId}}}}) or give "
            "fhirServer and fhirAuthorization",
        ) from None
    if patient is None:
        return None
    idents: list[PatientIdentifier] = []
    for system, value in identifiers(patient, call.patient_id):
        try:
            ident = hooks.identifiers.lookup(system, value, hospital=hospital)
        except InvalidIdentifier:
            continue
        if ident is None or any(i.system == ident.system for i in idents):
            continue  # one identifier per system: a person has one resident ID
        idents.append(ident)
        if len(idents) == MAX_IDENTIFIERS:
            break
    # One patient, counted by its first identifier (the resident ID when there is one).
    counted = [hooks.pseudonyms.of(idents[0])] if idents else []
    await call.admit(counted, emergency=emergency)
    return idents, _birth_date(patient)


async def _person(
    uow: CdsUnitOfWork, idents: Sequence[PatientIdentifier]
) -> tuple[PatientIdentifier, str] | None:
    """The identifier mrb knows the patient by, and the person; None: not known."""
    for ident in idents:
        person = await uow.people.find(ident)
        if person is not None:
            return ident, person
    return None


async def _audit_refused_server(call: _Call, fhir_server: str) -> None:
    """A fhirServer not registered for the client: nothing was sent; record who asked."""
    try:
        host = urlsplit(fhir_server).hostname
    except ValueError:
        host = None
    async with call.hooks.uow() as uow:
        await uow.audit.record_read(
            call.actor,
            action="cds-fhir-server-refused",
            purpose="cds-hooks",
            patient=None,
            person_id=None,
            detail={"client": call.caller.client.issuer, "fhir_server_host": (host or "")[:200]},
        )
        await uow.commit()


def _birth_date(patient: dict[str, Any]) -> date | None:
    """Patient.birthDate when it is a full date (a year or year-month gives no age in days)."""
    raw = patient.get("birthDate")
    try:
        return date.fromisoformat(raw) if isinstance(raw, str) and len(raw) == 10 else None
    except ValueError:
        return None


# -- patient-view ----------------------------------------------------------------------------


async def _patient_view(call: _Call) -> dict[str, Any]:
    hooks, caller = call.hooks, call.caller
    hospital = caller.client.hospital
    patient = await _identify(call, emergency=False)
    if patient is None:
        return dict(NO_CARDS)
    async with hooks.uow() as uow:
        found = await _person(uow, patient[0])
        if found is None:
            return dict(NO_CARDS)
        ident, person = found
        rules = await hooks.rules.current_rules(uow.mappings)
        catalog = rules.catalog
        horizon = max((i.validity_days for i in catalog.items.values()), default=0)
        since = caller.now - timedelta(days=horizon + 1)
        everything = await uow.results.prior_items(person)
        # Other hospitals' sensitive results are neither counted nor named, nor do they date
        # the card, unless the patient consented to share their category; after an opt-out
        # no other hospital's result is: no card (issue "Patient rights").
        consent = await uow.consents.view(person)
        hidden = rules.sensitivity.hidden_results(
            everything, viewer=hospital, catalog=catalog, consented=consent.categories
        )
        prior = [
            p
            for p in everything
            if not consent.opted_out
            and p.result_id not in hidden
            and p.hospital != hospital
            and p.effective is not None
            and since <= p.effective <= caller.now
            and p.status in RECOGNISABLE_STATUSES
            and p.result_status not in WITHDRAWN_STATUSES
            and p.result_status not in REPORT_NOT_FINAL
        ]
        results = {p.result_id for p in prior}
        await uow.audit.record_read(
            call.actor,
            action="cds-patient-view",
            purpose="patient-view",
            patient=ident,
            person_id=person,
            detail={"results": len(results), "client": caller.client.issuer},
        )
        profiles = await uow.hospitals.profiles() if results else {}
        await uow.commit()
    if not results:
        return dict(NO_CARDS)
    by_hospital = sorted({p.hospital for p in prior})
    names = [profiles[h].name if h in profiles else h for h in by_hospital]
    latest: date | None = max(local_date(p.effective) for p in prior if p.effective)
    card = patient_view_card(
        results=len(results), hospitals=names, latest=latest, base_url=caller.base_url
    )
    return {"cards": [{"uuid": str(uuid.uuid4()), **card}]}
