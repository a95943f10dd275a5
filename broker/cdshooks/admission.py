"""The rate limits of a hook call (the `CallAdmission` port) on broker/services/rate_limits.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from broker.domain.actors import Actor
from broker.ports.cds import CallAdmission
from broker.services.rate_limits import RateLimiter, admit, refuse_deferred

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class CdsRateLimitAdmission(CallAdmission):
    """The doctor in context.userId is counted per person (the API edge cannot name them);
    a break-glass pass is audited through `sessions`."""

    def __init__(
        self, limiter: Callable[[], RateLimiter], sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._limiter = limiter  # built on first use, with the settings of that moment
        self._sessions = sessions

    async def admit(self, actor: Actor, patients: Sequence[str], *, emergency: bool) -> None:
        await admit(
            self._limiter(),
            self._sessions,
            actor,
            patients=patients,
            emergency=emergency,
            channel="cds-hooks",
            per_person_requests=True,
        )

    def refuse_deferred(self) -> None:
        refuse_deferred()
