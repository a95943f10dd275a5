"""Ports of who may call mrb: the register of issued API tokens and the people who log in
through OpenID Connect (their mapped role and hospital).

Issuing, revoking, mapping and disabling each work in one unit of work with the audit
entry of the change. The check on every request (`AccessLookups`) reads one row outside
any unit of work and raises RegisterUnavailable when it cannot: the caller then refuses
the request rather than letting it through unchecked.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from broker.ports.admin import ChangeLog
from broker.ports.registry import HospitalRegistry
from broker.ports.unit_of_work import UnitOfWork
from broker.security.tokens import IssuedToken


class OidcUser(BaseModel):
    issuer: str
    subject: str
    role: str
    hospital: str
    display_name: str | None
    created_by: str
    created_at: datetime
    disabled_at: datetime | None


class TokenRecord(BaseModel):
    """An issued API token as recorded: never the token text, only its facts."""

    jti: str
    subject: str
    role: str
    hospital: str
    kind: str
    key_id: str
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    reason: str | None


@dataclass(frozen=True)
class TokenState:
    """What a request needs to know about a token it verified."""

    recorded: bool
    revoked: bool


class OidcUsers(abc.ABC):
    @abc.abstractmethod
    async def get(self, issuer: str, subject: str) -> OidcUser | None: ...

    @abc.abstractmethod
    async def put(self, user: OidcUser) -> None:
        """Store the mapping, replacing the one of the same issuer and subject."""

    @abc.abstractmethod
    async def disable(self, issuer: str, subject: str, *, at: datetime) -> bool:
        """Disable an enabled user; False when there is none (unknown, or disabled)."""

    @abc.abstractmethod
    async def find(
        self, *, issuer: str | None, hospital: str | None, enabled_only: bool
    ) -> list[OidcUser]:
        """Users ordered by issuer and subject."""


class TokenRegister(abc.ABC):
    @abc.abstractmethod
    async def record(self, token: IssuedToken, *, issued_by: str) -> None: ...

    @abc.abstractmethod
    async def get(self, jti: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    async def find(
        self, *, hospital: str | None, subject: str | None, live_at: datetime | None
    ) -> list[TokenRecord]:
        """Tokens newest first; `live_at`: only those neither expired nor revoked then."""

    @abc.abstractmethod
    async def revoke(self, jtis: list[str], *, by: str, reason: str, at: datetime) -> list[str]:
        """Revoke those not revoked yet; the jtis this call revoked, sorted."""


class AccessUnitOfWork(UnitOfWork):
    """A token or user change, the hospital it names and its audit entry, in one
    transaction."""

    users: OidcUsers
    tokens: TokenRegister
    hospitals: HospitalRegistry
    changes: ChangeLog


class RegisterUnavailable(Exception):
    """The token register or the user table cannot be read now."""


class AccessLookups(abc.ABC):
    """The per-request reads (RegisterUnavailable when the database cannot answer)."""

    @abc.abstractmethod
    async def user(self, issuer: str, subject: str) -> OidcUser | None: ...

    @abc.abstractmethod
    async def token_state(self, jti: str) -> TokenState: ...
