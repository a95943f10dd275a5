"""The distinct-patient rate limit as the FHIR use cases' Admission port."""

from __future__ import annotations

from collections.abc import Callable

from broker import ports
from broker.domain.actors import Actor
from broker.domain.errors import TooManyRequests
from broker.domain.identifiers import PatientIdentifier
from broker.ports.audit_trail import ReadAudit
from broker.security.pseudonyms import Pseudonymiser
from broker.services.rate_limits import RateLimited, RateLimiter, admit


class RateLimitAdmission(ports.Admission):
    """Counts the pseudonym of the identifier searched, or the person id asked for."""

    def __init__(
        self,
        limiter: Callable[[], RateLimiter],
        audit: ReadAudit,
        pseudonyms: Pseudonymiser,
    ) -> None:
        self._limiter = limiter  # built on first use, shared with the API edge
        self._audit = audit
        self._pseudonyms = pseudonyms

    async def admit(
        self, actor: Actor, *, patient: PatientIdentifier | None, person_id: str | None
    ) -> None:
        key = self._pseudonyms.of(patient) if patient is not None else None
        if key is None and person_id:
            key = f"person:{person_id}"
        try:
            await admit(
                self._limiter(),
                self._audit,
                actor,
                patients=[key] if key else [],
                emergency=False,
                channel="fhir",
            )
        except RateLimited as exc:
            raise TooManyRequests(
                exc.title, exc.detail, exc.retry_after, issue="throttled"
            ) from None
