"""The CDS Hooks use cases on fakes (broker/cdshooks/hooks.py): what a draft order is
answered with and what is stored, when order-sign re-uses order-select's check, feedback
recorded once, and the fhirServer rule (the same flows run over HTTP on SQLite and
PostgreSQL in tests/integration/test_cds_hooks.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from broker import ports
from broker.cdshooks import hooks
from broker.cdshooks.auth import AuthenticatedClient
from broker.cdshooks.cards import RECOGNITION
from broker.cdshooks.models import FeedbackRequest, HookRequest
from broker.cdshooks.services import SERVICES
from broker.domain.actors import Actor
from broker.domain.errors import Invalid, PreconditionFailed
from broker.domain.identifiers import RESIDENT_ID_SYSTEM, normalise
from broker.reference.identifier_systems import shipped_identifier_registry
from broker.security.pseudonyms import Pseudonymiser
from broker.services.checks import Rules
from broker.services.outcomes import OutcomeRequest, RecordedOutcome, record_outcomes
from tests import factories as f
from tests.fakes import (
    FakeCallAdmission,
    FakeCdsUnitOfWork,
    FakeCheckUnitOfWork,
    FakeOutcomeUnitOfWork,
)
from tests.unit.test_recognition_rules import CATALOG, HOSPITALS, LOINC, ORDER_TIME, POLICY, at, obs

SELECT = SERVICES["mrb-recognition-order-select"]
SIGN = SERVICES["mrb-recognition-order-sign"]
PATIENT_ID = "1288992"
VERSION = "2026-05-19T00:05:00+00:00"
NOW = ORDER_TIME.astimezone(UTC)
CLIENT = AuthenticatedClient("https://his.h001.example.cn/", "H001", "jti-1", NOW)


class Stack:
    """The use cases' collaborators as bootstrap hands them out, on fakes: patient A (a
    person with haemoglobin r-hb and platelets r-plt from H002, both current)."""

    def __init__(self) -> None:
        self.check = FakeCheckUnitOfWork(HOSPITALS)
        self.outcome = FakeOutcomeUnitOfWork()
        self.cds = FakeCdsUnitOfWork(self.check, self.outcome)
        self.admission = FakeCallAdmission()
        ident = normalise(RESIDENT_ID_SYSTEM, f.PATIENT_A, hospital="H001")
        assert ident is not None
        self.check.people.links[ident.link_key] = "person-1"
        self.check.results.items["person-1"] = [
            replace(obs("r-hb", "H002", "718-7", at(date(2026, 5, 19))), result_version=VERSION),
            replace(obs("r-plt", "H002", "777-3", at(date(2026, 5, 19))), result_version=VERSION),
        ]
        for r in ("r-hb", "r-plt"):
            self.cds.results.now[r] = ports.PriorResultState("final", VERSION, "Observation")
        self.hooks = hooks.CdsHooks(
            uow=lambda: self.cds,
            check_uow=lambda: self.check,
            rules=Rules(CATALOG, POLICY),
            pseudonyms=Pseudonymiser(b"k" * 32),
            identifiers=shipped_identifier_registry(),
            admission=self.admission,
            record_outcomes=self._record_outcomes,
        )

    async def _record_outcomes(
        self,
        check_id: str,
        requests: Sequence[OutcomeRequest],
        actor: Actor,
        *,
        channel: str,
        now: datetime | None,
    ) -> list[RecordedOutcome]:
        for c in self.check.committed["checks"]:  # the check as outcomes read it back
            self.outcome.checks.stored[c.check_id] = ports.CheckedItems(
                c.check_id, c.ordering_hospital, c.items
            )
        for r, state in self.cds.results.now.items():
            self.outcome.results.current[r] = ports.ResultState(state.status, state.version)
        return await record_outcomes(
            self.outcome, CATALOG, check_id, requests, actor, channel=channel, now=now
        )

    async def call(
        self, service: Any, *codes: str, now: datetime = NOW, **changes: Any
    ) -> list[dict[str, Any]]:
        drafts = [
            {
                "resourceType": "ServiceRequest",
                "id": f"sr-{code}",
                "status": "draft",
                "intent": "order",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": {"reference": f"Patient/{PATIENT_ID}"},
            }
            for code in codes
        ]
        context: dict[str, Any] = {
            "userId": "Practitioner/dr-li",
            "patientId": PATIENT_ID,
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]},
        }
        if service is SELECT:
            context["selections"] = [f"ServiceRequest/{d['id']}" for d in drafts]
        body: dict[str, Any] = {
            "hook": service.hook,
            "hookInstance": "call-1",
            "context": context,
            "prefetch": {"patient": f.patient(pid=PATIENT_ID)},
        } | changes
        caller = hooks.HookCall(CLIENT, "https://mrb.example/", now)
        answer = await hooks.answer(
            self.hooks, service, HookRequest.model_validate(body), caller, transport=NO_NETWORK
        )
        cards: list[dict[str, Any]] = answer["cards"]
        return cards

    async def feedback(self, card: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "card": card["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
            "outcomeTimestamp": NOW.isoformat(),
        }
        body = FeedbackRequest.model_validate({"feedback": [entry]})
        answer = await hooks.record_feedback(
            self.hooks, SIGN, body, hooks.HookCall(CLIENT, "https://mrb.example/", NOW)
        )
        (recorded,) = answer["feedback"]
        return dict(recorded)

    @property
    def checks(self) -> list[ports.RecordedCheck]:
        return list(self.check.committed["checks"])


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request may leave mrb here: {request.url}")


NO_NETWORK = httpx.MockTransport(_refuse)


async def test_a_draft_order_is_answered_with_a_card_per_item_and_stored() -> None:
    stack = Stack()

    cards = await stack.call(SIGN, "718-7", "777-3")

    (check,) = stack.checks  # both orders in one check, committed once
    assert stack.check.commits == 1
    assert [c["summary"] for c in cards] and len(cards) == 2
    stored = stack.cds.cards.issued
    assert [c.uuid for c in stored] == [c["uuid"] for c in cards]  # in draft order
    assert [(c.check_id, c.item_index, c.kind) for c in stored] == [
        (check.check_id, 0, RECOGNITION),
        (check.check_id, 1, RECOGNITION),
    ]
    assert [c.draft_ref for c in stored] == ["ServiceRequest/sr-718-7", "ServiceRequest/sr-777-3"]
    assert all(c.issuer == CLIENT.issuer and c.user_id == "Practitioner/dr-li" for c in stored)
    assert cards[0]["suggestions"][0]["uuid"] == stored[0].suggestion_uuid
    assert "https://mrb.example/fhir/Observation/r-hb" in str(cards[0])
    drafts = stack.cds.drafts.rows
    assert {(r, c.check_id, c.item_index) for (_, _, r, _), c in drafts.items()} == {
        ("ServiceRequest/sr-718-7", check.check_id, 0),
        ("ServiceRequest/sr-777-3", check.check_id, 1),
    }
    assert all(f.PATIENT_A not in key for key in str(list(drafts)))  # keyed by pseudonym
    ((_, patients, emergency),) = stack.admission.admitted  # one patient counted, once
    assert len(patients) == 1 and patients[0] != f.PATIENT_A and not emergency
    (read,) = stack.check.committed["reads"]
    assert read["action"] == "recognition-check"


@pytest.mark.parametrize(
    "change",
    [
        None,
        ports.PriorResultState("entered-in-error", VERSION, "Observation"),  # withdrawn
        ports.PriorResultState("final", "2026-05-20T00:30:00+00:00", "Observation"),  # amended
    ],
    ids=["unchanged", "withdrawn", "new-version"],
)
async def test_order_sign_reuses_the_select_check_unless_the_candidate_changed(
    change: ports.PriorResultState | None,
) -> None:
    stack = Stack()
    (first,) = await stack.call(SELECT, "718-7")
    if change is not None:
        stack.cds.results.now["r-hb"] = change

    signed = await stack.call(SIGN, "718-7", now=NOW + timedelta(minutes=5))

    if change is None:
        assert len(stack.checks) == 1  # the select's check answers the sign
        (again,) = signed
        assert again["uuid"] != first["uuid"]  # a new card, for feedback on the sign
        assert {k: v for k, v in again.items() if k not in ("uuid", "suggestions")} == {
            k: v for k, v in first.items() if k not in ("uuid", "suggestions")
        }
        assert {c.check_id for c in stack.cds.cards.issued} == {stack.checks[0].check_id}
    else:
        assert len(stack.checks) == 2  # decided again
        ((_, _, _, _), held) = next(iter(stack.cds.drafts.rows.items()))
        assert held.check_id == stack.checks[1].check_id  # the draft points at the new one


async def test_a_check_from_another_day_is_not_reused() -> None:
    stack = Stack()
    await stack.call(SELECT, "718-7", now=NOW - timedelta(days=1))
    await stack.call(SIGN, "718-7")
    assert len(stack.checks) == 2


async def test_feedback_for_a_card_records_the_outcome_once() -> None:
    stack = Stack()
    (card,) = await stack.call(SIGN, "718-7")

    first = await stack.feedback(card)
    again = await stack.feedback(card)

    assert first["recorded"] == "accepted" and first["replayed"] is False
    assert again["recorded"] == "accepted" and again["replayed"] is True
    (outcome,) = stack.outcome.outcomes.stored
    assert (outcome.check_id, outcome.item_index) == (stack.checks[0].check_id, 0)
    assert outcome.channel == "cds-hooks" and outcome.recorded_by == "Practitioner/dr-li"
    assert len(stack.outcome.ledger.entries) == 1  # the saving booked once
    # An item the doctor decided is not raised again on the next sign.
    assert await stack.call(SIGN, "718-7", now=NOW + timedelta(minutes=5)) == []
    assert len(stack.checks) == 1


async def test_feedback_naming_another_suggestion_is_refused_and_records_nothing() -> None:
    stack = Stack()
    (card,) = await stack.call(SIGN, "718-7")
    card["suggestions"][0]["uuid"] = "not-the-suggestion"
    with pytest.raises(Invalid, match="acceptedSuggestions"):
        await stack.feedback(card)
    assert stack.outcome.outcomes.stored == [] and stack.outcome.ledger.entries == []


async def test_an_unregistered_fhir_server_is_refused_audited_and_never_contacted() -> None:
    stack = Stack()
    with pytest.raises(PreconditionFailed, match="registered"):
        await stack.call(
            SIGN,
            "718-7",
            prefetch=None,
            fhirServer="https://elsewhere.example/fhir",
            fhirAuthorization={
                "access_token": "ehr-token",
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/Patient.read",
                "subject": "mrb",
            },
        )
    (read,) = stack.cds.audit.reads  # committed: the refusal itself is on record
    assert read["action"] == "cds-fhir-server-refused" and read["patient"] is None
    assert read["detail"] == {"client": CLIENT.issuer, "fhir_server_host": "elsewhere.example"}
    assert stack.cds.commits == 1
    assert stack.checks == [] and stack.cds.cards.issued == [] and stack.cds.drafts.rows == {}
    assert stack.admission.admitted == []  # nobody was looked up


async def test_a_patient_mrb_does_not_know_gets_no_card_and_no_check() -> None:
    stack = Stack()
    stack.check.people.links.clear()
    assert await stack.call(SIGN, "718-7") == []
    assert stack.checks == [] and stack.cds.cards.issued == [] and stack.cds.drafts.rows == {}
    assert len(stack.admission.admitted) == 1  # still counted against the doctor's limit
