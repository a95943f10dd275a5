"""Who is calling, and what each role may do.

A caller is a named person or system with one role. Hospital roles act for one hospital;
platform roles act platform-wide, each for one duty (等保 2.0 三员分立: the system
administrator, the security administrator and the auditor are different people).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ALL_HOSPITALS = "*"  # the scope of a platform role's token: every hospital, one duty


class Role(StrEnum):
    # Hospital roles: one hospital each.
    ADAPTER = "adapter"
    DOCTOR = "doctor"
    FINANCE = "finance"
    ADMIN = "admin"
    # Platform roles: every hospital, one duty each.
    PLATFORM_ADMIN = "platform-admin"
    SECURITY_ADMIN = "security-admin"
    AUDIT = "audit"
    QC = "qc"
    PLATFORM_FINANCE = "platform-finance"

    @property
    def platform(self) -> bool:
        return self in PLATFORM_ROLES


HOSPITAL_ROLES = frozenset({Role.ADAPTER, Role.DOCTOR, Role.FINANCE, Role.ADMIN})
PLATFORM_ROLES = frozenset(Role) - HOSPITAL_ROLES
# Roles a system (not a person) may hold, with the longer machine token lifetime. An
# adapter is always a system; reports and audit exports may be pulled by a scheduled job.
MACHINE_ROLES = frozenset({Role.ADAPTER, Role.FINANCE, Role.PLATFORM_FINANCE, Role.AUDIT})


class Duty(StrEnum):
    """What a route or command does, in the terms the role table grants."""

    REFERENCE = "read reference data (catalog, hospitals, decline reasons)"
    RECOGNITION = "recognition checks, outcomes, safety notices, FHIR reads"
    SAVINGS = "savings report"
    CITY_REPORTS = "city-wide reports (the regulator's monthly return)"
    LEDGER_READ = "list closed ledger months"
    LEDGER_CLOSE = "close ledger months"
    REGISTRY = "hospital registry: hospitals, level, region, alliances, signing keys"
    CERTIFY = "QC certifications"
    MAPPINGS = "local-code mappings and the unmapped-code worklist"
    TOKENS = "list and revoke tokens (users)"
    ISSUING = "issue tokens, manage the token issuer key"
    AUDIT_TRAIL = "read the audit trail"
    PATIENT_ACCESS_REPORT = "a patient's access report (who read their data), from the audit trail"
    CONSENTS = "record, withdraw and read a patient's consent and opt-out (their own hospital's)"
    BREAK_GLASS_REPORT = "the break-glass report: emergency reads beyond consent, to review"
    IDENTITY = "patient identity: review possible matches, link and unlink people"


# Which roles may do what. For hospital roles the hospital acted on must be their own
# (`scoped`); platform roles act on any hospital, but only for the duties listed here.
GRANTS: dict[Duty, frozenset[Role]] = {
    Duty.REFERENCE: frozenset(Role) - {Role.AUDIT},
    Duty.RECOGNITION: frozenset({Role.DOCTOR}),
    Duty.SAVINGS: frozenset({Role.FINANCE, Role.PLATFORM_FINANCE}),
    Duty.CITY_REPORTS: frozenset({Role.PLATFORM_FINANCE}),
    Duty.LEDGER_READ: frozenset({Role.FINANCE, Role.PLATFORM_FINANCE, Role.PLATFORM_ADMIN}),
    Duty.LEDGER_CLOSE: frozenset({Role.PLATFORM_ADMIN}),
    Duty.REGISTRY: frozenset({Role.PLATFORM_ADMIN}),
    Duty.CERTIFY: frozenset({Role.QC}),
    Duty.MAPPINGS: frozenset({Role.ADMIN, Role.PLATFORM_ADMIN}),
    Duty.TOKENS: frozenset({Role.ADMIN, Role.SECURITY_ADMIN}),
    Duty.ISSUING: frozenset({Role.SECURITY_ADMIN}),
    Duty.AUDIT_TRAIL: frozenset({Role.AUDIT}),
    # Read from the audit trail, so the auditor's alone (三员分立); the platform answers a
    # patient's request through a service holding an audit token (docs/security.md).
    Duty.PATIENT_ACCESS_REPORT: frozenset({Role.AUDIT}),
    # A doctor of a hospital holding the patient's results records what the patient signed
    # there (PIPL Arts. 29, 44); the use case checks the hospital (broker/services/consents.py).
    Duty.CONSENTS: frozenset({Role.DOCTOR}),
    # Break-glass reads are a security event the security administrator reviews (issue
    # "Patient rights"), and entries of the audit trail the auditor may read.
    Duty.BREAK_GLASS_REPORT: frozenset({Role.SECURITY_ADMIN, Role.AUDIT}),
    # Links span hospitals, so no hospital decides them (issue #17): the system administrator.
    Duty.IDENTITY: frozenset({Role.PLATFORM_ADMIN}),
}


class Forbidden(PermissionError):
    """The caller's role or hospital does not allow this; the message says which."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: Role
    hospital: str  # a registered hospital id for hospital roles, ALL_HOSPITALS for platform
    token_id: str | None = None  # the token's jti, when authenticated by one

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("an actor needs a name (the person or system acting)")
        if self.role.platform and self.hospital != ALL_HOSPITALS:
            raise ValueError(f"{self.role} is a platform role: its hospital is '*'")
        if not self.role.platform and (not self.hospital or self.hospital == ALL_HOSPITALS):
            raise ValueError(f"{self.role} is a hospital role: name one hospital, not '*'")

    @property
    def platform(self) -> bool:
        return self.role.platform

    def acts_for(self, hospital: str) -> bool:
        """A platform role acts on any hospital; a hospital role only on its own."""
        return self.platform or self.hospital == hospital

    def may(self, duty: Duty, hospital: str | None = None) -> bool:
        if self.role not in GRANTS[duty]:
            return False
        return hospital is None or self.acts_for(hospital)

    def authorize(self, duty: Duty, hospital: str | None = None) -> None:
        """Raise Forbidden unless this actor may do `duty` (on `hospital`, if one is named)."""
        if self.role not in GRANTS[duty]:
            allowed = ", ".join(sorted(r.value for r in GRANTS[duty]))
            raise Forbidden(f"{duty.value} needs the role {allowed}; this is {self.role.value}")
        if hospital is not None and not self.acts_for(hospital):
            raise Forbidden(
                f"{self.name} acts for {self.hospital} only; {hospital} is another hospital's"
            )
