"""The rate limits of a hook call (the `CallAdmission` port) on broker/services/rate_limits.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.domain.actors import Actor
from broker.ports.audit_trail import ReadAudit
from broker.ports.cds import CallAdmission
from broker.services.rate_limits import RateLimiter, admit, refuse_deferred


class CdsRateLimitAdmission(CallAdmission):
    """The doctor in context.userId is counted per person (the API edge cannot name them);
    a break-glass pass is audited through `audit`."""

    def __init__(self, limiter: Callable[[], RateLimiter], audit: ReadAudit) -> None:
        self._limiter = limiter  # built on first use, with the settings of that moment
        self._audit = audit

    async def admit(self, actor: Actor, patients: Sequence[str], *, emergency: bool) -> None:
        await admit(
            self._limiter(),
            self._audit,
            actor,
            patients=patients,
            emergency=emergency,
            channel="cds-hooks",
            per_person_requests=True,
        )

    def refuse_deferred(self) -> None:
        refuse_deferred()
