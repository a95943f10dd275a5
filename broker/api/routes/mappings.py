"""Admin API: the unmapped-code worklist and local-code mappings (hospital IT: a
hospital admin for their own hospital, platform-admin for any)."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from broker.api.deps import ContainerDep, MappingsDep
from broker.ports.mappings import Unmapped
from broker.services import mappings as mapping_service

router = APIRouter(prefix="/api/v1/admin/mappings", tags=["admin"])


class MappingIn(BaseModel):
    hospital: str = Field(min_length=1, max_length=32)
    system: str = Field(min_length=1, max_length=300)
    code: str = Field(min_length=1, max_length=100)
    catalog_code: str = Field(min_length=1, max_length=64)


@router.get("/unmapped", response_model=list[Unmapped])
async def unmapped(
    container: ContainerDep, actor: MappingsDep, hospital: str | None = None, all: bool = False
) -> list[Unmapped]:
    """Local codes seen in results that map to no catalog item, most frequent first."""
    return await mapping_service.worklist(
        container.mapping_uow(), actor, hospital, include_mapped=all
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def add(body: MappingIn, container: ContainerDep, actor: MappingsDep) -> dict[str, object]:
    """Map a local code to a catalog item; in force from the next request, no restart."""
    covered = await mapping_service.add_mapping(
        container.mapping_uow(),
        container.reference_rules().catalog,
        hospital=body.hospital,
        system=body.system,
        code=body.code,
        catalog_code=body.catalog_code,
        by=actor,
    )
    return {**body.model_dump(), "results_covered": covered}
