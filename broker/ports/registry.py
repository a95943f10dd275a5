"""Ports of the hospital registry: hospitals, their QC certifications and signing keys.

`Hospital` is the domain's one hospital model (broker.domain.registry), here as an
administrator registers it: without its certifications, which are kept apart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from broker.domain.registry import Certification
from broker.domain.registry import Hospital as Hospital
from broker.ports.admin import ChangeLog
from broker.ports.unit_of_work import UnitOfWork


class HospitalExists(Exception):
    """A hospital with this id is already registered."""


class UnknownHospital(Exception):
    """No hospital with this id is registered."""


class KeyExists(Exception):
    """This key id is already registered for the hospital."""


@dataclass(frozen=True)
class HospitalKey:
    """A hospital's registered signing key: public material and its dates only."""

    hospital: str
    key_id: str
    public_key: str  # base64 of the raw public key
    added_at: datetime
    revoked_at: datetime | None


class HospitalRegistry(abc.ABC):
    @abc.abstractmethod
    async def all(self) -> list[Hospital]:
        """Every registered hospital, by id."""

    @abc.abstractmethod
    async def certifications(self) -> list[Certification]:
        """Every hospital's QC certifications, by hospital."""

    @abc.abstractmethod
    async def get(self, hospital_id: str) -> Hospital | None: ...

    @abc.abstractmethod
    async def add(self, h: Hospital, *, replace: bool = False) -> None:
        """Register a hospital; with `replace`, update an existing one instead of raising
        HospitalExists."""

    @abc.abstractmethod
    async def certify(self, cert: Certification, reference: str | None) -> None:
        """Record a QC certification (UnknownHospital)."""

    @abc.abstractmethod
    async def add_key(self, hospital_id: str, key_id: str, public_b64: str) -> None:
        """Register a public key (UnknownHospital, KeyExists)."""

    @abc.abstractmethod
    async def revoke_key(self, hospital_id: str, key_id: str) -> bool:
        """Revoke an active key; False when the hospital has no such active key."""

    @abc.abstractmethod
    async def signing_keys(self) -> list[HospitalKey]:
        """Every hospital's signing keys, revoked ones included, by hospital and key id."""


class RegistryUnitOfWork(UnitOfWork):
    """A registry change and its audit entry, in one transaction."""

    hospitals: HospitalRegistry
    changes: ChangeLog
