"""Hospital IT maps local codes to catalog items; the worklist says which are missing."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.domain.actors import Actor, Duty
from broker.domain.catalog import Catalog
from broker.domain.errors import Invalid, NotFound
from broker.domain.mapping import is_local
from broker.ports.mappings import MappingUnitOfWork, Unmapped


async def worklist(
    uow: MappingUnitOfWork, by: Actor, hospital: str | None = None, *, include_mapped: bool = False
) -> list[Unmapped]:
    """Local codes seen in results that map to no catalog item, most frequent first: an
    admin of one hospital sees only that hospital's; a platform admin any one's, or all."""
    if hospital is not None:
        by.authorize(Duty.MAPPINGS, hospital)
    elif not by.platform:
        hospital = by.hospital
    async with uow:
        return await uow.mappings.unmapped(hospital, include_mapped=include_mapped)


async def add_mapping(
    uow: MappingUnitOfWork,
    catalog: Catalog,
    *,
    hospital: str,
    system: str,
    code: str,
    catalog_code: str,
    by: Actor,
) -> int:
    """Map a hospital's local code; returns how many indexed results it now covers.

    A hospital admin maps their own hospital's codes only; the change is audited.
    """
    by.authorize(Duty.MAPPINGS, hospital)
    if catalog_code not in catalog.items:
        raise Invalid(
            "Unknown catalog item",
            f"{catalog_code!r} is not in the catalog (see GET "
            "/api/v1/admin/catalog or schemas/catalog/catalog.yaml)",
        )
    if not is_local(system):
        raise Invalid(
            "Not a local code system",
            f"{system} is a standard vocabulary; only hospital-local codes are mapped",
        )
    if not code.strip():
        raise Invalid("Empty code", "give the local code to map")
    async with uow:
        if await uow.hospitals.get(hospital) is None:
            raise NotFound("Unknown hospital", f"{hospital!r} is not registered")
        covered = await uow.mappings.add(
            hospital, system, code.strip(), catalog_code, by.name, datetime.now(UTC)
        )
        await uow.changes.record(
            by,
            action="mapping.add",
            hospital=hospital,
            detail={"system": system, "code": code.strip(), "catalog_code": catalog_code},
        )
        await uow.commit()
    return covered
