"""Ports of the web login: local accounts (the embedded set-up's users, with an argon2id
password hash) and server-side sessions (only a hash of each session id is stored).

Adding, disabling and resetting an account, a login, a failure and a logout each work in
one unit of work with their audit entry.
"""

from __future__ import annotations

import abc
from datetime import datetime

from pydantic import BaseModel

from broker.domain.sessions import Failures
from broker.ports.access import OidcUsers
from broker.ports.admin import ChangeLog
from broker.ports.registry import HospitalRegistry
from broker.ports.unit_of_work import UnitOfWork


class WebAccount(BaseModel):
    username: str
    password_hash: str
    role: str
    hospital: str  # '*' for platform roles
    display_name: str | None
    created_by: str
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None
    failed_count: int = 0
    failed_since: datetime | None = None
    locked_until: datetime | None = None

    @property
    def failures(self) -> Failures:
        return Failures(self.failed_count, self.failed_since, self.locked_until)


class WebSession(BaseModel):
    id_hash: str
    username: str
    created_at: datetime
    last_seen_at: datetime


class WebAccounts(abc.ABC):
    @abc.abstractmethod
    async def get(self, username: str, *, for_update: bool = False) -> WebAccount | None:
        """`for_update`: lock the row (PostgreSQL) so concurrent failures all count."""

    @abc.abstractmethod
    async def add(self, account: WebAccount) -> None: ...

    @abc.abstractmethod
    async def set_failures(self, username: str, failures: Failures) -> None: ...

    @abc.abstractmethod
    async def set_password(self, username: str, password_hash: str, *, at: datetime) -> None:
        """Replace the hash and clear failures and lock."""

    @abc.abstractmethod
    async def set_disabled(self, username: str, at: datetime | None) -> bool:
        """Disable (at) or enable (None); False when it was so already."""

    @abc.abstractmethod
    async def find(self, *, hospital: str | None) -> list[WebAccount]:
        """Accounts ordered by username."""


class WebSessions(abc.ABC):
    @abc.abstractmethod
    async def add(self, session: WebSession) -> None: ...

    @abc.abstractmethod
    async def get(self, id_hash: str) -> WebSession | None: ...

    @abc.abstractmethod
    async def touch(self, id_hash: str, at: datetime) -> None: ...

    @abc.abstractmethod
    async def delete(self, id_hash: str) -> bool: ...

    @abc.abstractmethod
    async def delete_for(self, username: str) -> int:
        """End every session of an account; how many there were."""

    @abc.abstractmethod
    async def delete_expired(self, *, idle_before: datetime, created_before: datetime) -> int:
        """Drop sessions last used before `idle_before` or made before `created_before`."""


class WebUnitOfWork(UnitOfWork):
    accounts: WebAccounts
    sessions: WebSessions
    hospitals: HospitalRegistry
    changes: ChangeLog
    users: OidcUsers  # people of the OpenID Connect issuer, for their web sign-in
