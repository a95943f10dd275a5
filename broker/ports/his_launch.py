"""The HIS launch's port (broker/services/his_launch.py): its sessions, the checks they
ran, and its audit entries (broker/storage/launch_store.py on SQLAlchemy)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


def launch_context(session_hash: str) -> str:
    """What a launch is sealed bound to (the service seals it, storage re-seals it)."""
    return f"his-launch:{session_hash}"


@dataclass(frozen=True)
class LaunchSessionRecord:
    """A launch session as stored: who launched it, and the launch itself sealed (patient,
    items, purpose), bound to the session's id hash (`launch_context`)."""

    issuer: str
    hospital: str
    user: str
    sealed_launch: bytes
    created_at: datetime
    expires_at: datetime


class LaunchStore(Protocol):
    async def open_session(self, session_hash: str, record: LaunchSessionRecord) -> None:
        """Store a new session (and purge the expired sessions and checks)."""

    async def live_session(self, session_hash: str, now: datetime) -> LaunchSessionRecord | None:
        """The session, while it lives and its client is not revoked; None else."""

    async def bind_check(
        self,
        session_hash: str,
        issuer: str,
        hospital: str,
        check_id: str,
        *,
        readable_until: datetime,
    ) -> None:
        """Remember that this session ran this check (for that client's hospital)."""

    async def session_ran(self, session_hash: str, check_id: str, now: datetime) -> bool:
        """The live session ran this check."""

    async def client_launched(self, issuer: str, check_id: str, now: datetime) -> bool:
        """A session this client launched ran this check, within the read-back window."""

    async def record_launch(
        self, *, action: str, actor: str, role: str, hospital: str | None, detail: dict[str, Any]
    ) -> None: ...
