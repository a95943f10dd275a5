"""Who is calling: a named person or system with one role, scoped to one hospital."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ALL_HOSPITALS = "*"  # a platform-wide scope (the city platform's finance or admin staff)


class Role(StrEnum):
    ADAPTER = "adapter"
    DOCTOR = "doctor"
    FINANCE = "finance"
    ADMIN = "admin"
    AUDIT = "audit"


@dataclass(frozen=True)
class Actor:
    name: str
    role: Role
    hospital: str  # a registered hospital id, or ALL_HOSPITALS

    def acts_for(self, hospital: str) -> bool:
        return self.hospital in (hospital, ALL_HOSPITALS)
