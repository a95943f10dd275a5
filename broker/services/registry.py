"""Registering hospitals and their QC certifications, with the checks an admin expects.

Every change needs its duty (the registry: platform-admin; certifications: qc) and is
audited with its actor, in the transaction that makes it.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from broker.domain.actors import Actor, Duty
from broker.domain.catalog import Catalog
from broker.domain.registry import Certification, CertifyingBody
from broker.ports.registry import (
    Hospital,
    HospitalKey,
    KeyExists,
    RegistryUnitOfWork,
    UnknownHospital,
)
from broker.security import signatures

GRADES = {"甲": "甲", "乙": "乙", "A": "甲", "B": "乙"}
OWNERSHIP = {"public": "public", "private": "private", "公立": "public", "民营": "private"}


class RegistryError(ValueError):
    """A registration that cannot be accepted; the message names the field and the fix."""


def validated(h: Hospital) -> Hospital:
    """The hospital with normalised fields, or RegistryError."""
    if not h.id or len(h.id) > 32 or not h.id.replace("-", "").isalnum():
        raise RegistryError("id must be 1-32 letters, digits or '-', e.g. H001")
    if h.level not in ("1", "2", "3"):
        raise RegistryError("level must be 1, 2 or 3 (一级/二级/三级)")
    if not (h.region.isdigit() and len(h.region) in (2, 4, 6)):
        raise RegistryError("region must be a GB/T 2260 code of 2, 4 or 6 digits, e.g. 510502")
    grade = GRADES.get(h.grade) if h.grade else None
    if h.grade and grade is None:
        raise RegistryError("grade must be 甲 or 乙 (or omitted)")
    ownership = OWNERSHIP.get(h.ownership)
    if ownership is None:
        raise RegistryError("ownership must be public (公立) or private (民营)")
    if h.price_tier is not None and h.price_tier not in ("1", "2", "3"):
        raise RegistryError("price tier must be 1, 2 or 3 (defaults to the level)")
    try:
        ZoneInfo(h.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RegistryError(f"unknown time zone {h.timezone!r} (use an IANA name)") from None
    return replace(h, grade=grade, ownership=ownership)


async def hospitals_with_certifications(
    uow: RegistryUnitOfWork,
) -> list[tuple[Hospital, list[Certification]]]:
    """Every registered hospital, by id, with its QC certifications (reference data)."""
    async with uow:
        certs = await uow.hospitals.certifications()
        return [(h, [c for c in certs if c.hospital == h.id]) for h in await uow.hospitals.all()]


async def signing_keys(uow: RegistryUnitOfWork) -> list[HospitalKey]:
    """Every hospital's signing keys: public material and dates (reference data)."""
    async with uow:
        return await uow.hospitals.signing_keys()


async def register(
    uow: RegistryUnitOfWork,
    h: Hospital,
    *,
    by: Actor,
    replace: bool = False,
) -> Hospital:
    by.authorize(Duty.REGISTRY, h.id)
    clean = validated(h)
    async with uow:
        before = await uow.hospitals.get(clean.id)
        await uow.hospitals.add(clean, replace=replace)
        await uow.changes.record(
            by,
            action="registry.hospital." + ("replace" if before else "add"),
            hospital=clean.id,
            detail={"before": _plain(before), "after": _plain(clean)},
        )
        await uow.commit()
    return clean


def _plain(h: Hospital | None) -> dict[str, Any] | None:
    if h is None:
        return None
    plain = {**asdict(h), "alliances": sorted(h.alliances)}
    del plain["certifications"]  # kept apart from the registration, audited on their own
    return plain


def certification(
    catalog: Catalog,
    hospital: str,
    scope: str,
    body: str,
    valid_from: date,
    valid_to: date,
) -> Certification:
    """A certification checked against the catalog: scope is an item code or a QC group."""
    groups = {i.qc_group for i in catalog.items.values()}
    if scope not in catalog.items and scope not in groups:
        known = ", ".join(sorted(groups))
        raise RegistryError(f"{scope!r} is neither a catalog item nor a QC group ({known})")
    try:
        certifying = CertifyingBody(body)
    except ValueError:
        names = ", ".join(b.value for b in CertifyingBody)
        raise RegistryError(f"certifying body must be one of: {names}") from None
    if valid_to < valid_from:
        raise RegistryError("valid-to is before valid-from")
    return Certification(hospital, scope, certifying, valid_from, valid_to)


async def certify(
    uow: RegistryUnitOfWork,
    cert: Certification,
    reference: str | None,
    *,
    by: Actor,
) -> None:
    by.authorize(Duty.CERTIFY, cert.hospital)
    async with uow:
        try:
            await uow.hospitals.certify(cert, reference)
        except UnknownHospital:
            raise RegistryError(f"hospital {cert.hospital!r} is not registered") from None
        await uow.changes.record(
            by,
            action="registry.certify",
            hospital=cert.hospital,
            detail={
                "scope": cert.scope,
                "body": cert.body.value,
                "valid_from": cert.valid_from.isoformat(),
                "valid_to": cert.valid_to.isoformat(),
                "reference": reference,
            },
        )
        await uow.commit()


async def add_key(
    uow: RegistryUnitOfWork,
    hospital_id: str,
    key_id: str,
    public_b64: str,
    *,
    by: Actor,
) -> None:
    """Register a public key after checking it really is one."""
    by.authorize(Duty.REGISTRY, hospital_id)
    if not key_id or len(key_id) > 64:
        raise RegistryError("key id must have 1-64 characters")
    try:
        signatures.public_key(public_b64)
    except ValueError as exc:
        raise RegistryError(f"public key: {exc}") from None
    async with uow:
        try:
            await uow.hospitals.add_key(hospital_id, key_id, public_b64)
        except UnknownHospital:
            raise RegistryError(f"hospital {hospital_id!r} is not registered") from None
        except KeyExists:
            raise RegistryError(f"key {key_id!r} is already registered for {hospital_id}") from None
        await uow.changes.record(
            by,
            action="registry.key.add",
            hospital=hospital_id,
            detail={"key_id": key_id, "public_key": public_b64},
        )
        await uow.commit()


async def revoke_key(uow: RegistryUnitOfWork, hospital_id: str, key_id: str, *, by: Actor) -> None:
    by.authorize(Duty.REGISTRY, hospital_id)
    async with uow:
        if not await uow.hospitals.revoke_key(hospital_id, key_id):
            raise RegistryError(f"no active key {key_id!r} for {hospital_id}")
        await uow.changes.record(
            by,
            action="registry.key.revoke",
            hospital=hospital_id,
            detail={"key_id": key_id},
        )
        await uow.commit()
