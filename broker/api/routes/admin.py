"""Admin API: the hospital registry (platform-admin), QC certifications (qc) and the
item catalog (read by every role but audit). Every write is audited with its actor."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, Field

from broker.api.deps import CertifyDep, ContainerDep, RegistryDep, require
from broker.domain.actors import Duty
from broker.ports import registry
from broker.services import registry as registry_service

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
READ = Depends(require(Duty.REFERENCE))  # reference data: no patient data here


class HospitalIn(BaseModel):
    id: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    region: str = Field(description="GB/T 2260 code, e.g. 510502")
    level: Literal["1", "2", "3"]
    grade: str | None = Field(default=None, description="甲 or 乙")
    ownership: str = Field(default="public", description="public (公立) or private (民营)")
    price_tier: Literal["1", "2", "3"] | None = None
    alliances: list[str] = Field(default_factory=list, description="医联体/医共体 ids")
    timezone: str = "Asia/Shanghai"


class CertificationIn(BaseModel):
    scope: str = Field(description="catalog item code (LAB-HGB) or QC group (HEMATOLOGY)")
    body: Literal[
        "national-eqa", "provincial-eqa", "provincial-imaging-qc", "city-eqa", "city-imaging-qc"
    ]
    valid_from: date
    valid_to: date
    reference: str | None = Field(default=None, max_length=100)


class CertificationOut(BaseModel):
    scope: str
    body: str
    valid_from: date
    valid_to: date


class KeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="base64 of the raw public key (public material)")
    added_at: datetime
    revoked_at: datetime | None


class HospitalOut(HospitalIn):
    certifications: list[CertificationOut] = Field(default_factory=list)
    keys: list[KeyOut] = Field(default_factory=list, description="signing keys, revoked too")


@router.get("/hospitals", response_model=list[HospitalOut], dependencies=[READ])
async def list_hospitals(container: ContainerDep) -> list[HospitalOut]:
    """Every registered hospital with its alliances, certifications and signing keys."""
    listed = await registry_service.hospitals_with_certifications(container.registry_uow())
    keys = await registry_service.signing_keys(container.registry_uow())
    return [
        HospitalOut(
            id=h.id,
            name=h.name,
            region=h.region,
            level=h.level,  # type: ignore[arg-type]
            grade=h.grade,
            ownership=h.ownership,
            price_tier=h.price_tier,  # type: ignore[arg-type]
            alliances=sorted(h.alliances),
            timezone=h.timezone,
            certifications=[
                CertificationOut(
                    scope=c.scope, body=c.body.value, valid_from=c.valid_from, valid_to=c.valid_to
                )
                for c in certs
            ],
            keys=[
                KeyOut(
                    key_id=k.key_id,
                    public_key=k.public_key,
                    added_at=k.added_at,
                    revoked_at=k.revoked_at,
                )
                for k in keys
                if k.hospital == h.id
            ],
        )
        for h, certs in listed
    ]


@router.post("/hospitals", status_code=status.HTTP_201_CREATED)
async def add_hospital(
    body: HospitalIn, container: ContainerDep, actor: RegistryDep
) -> dict[str, str]:
    """Register a hospital (409 if the id exists; PUT replaces). Platform-admin only."""
    await registry_service.register(container.registry_uow(), _hospital(body), by=actor)
    return {"id": body.id}


@router.put("/hospitals/{hospital_id}")
async def replace_hospital(
    hospital_id: str, body: HospitalIn, container: ContainerDep, actor: RegistryDep
) -> dict[str, str]:
    """Create or update a hospital; alliances are replaced by those given. Platform-admin
    only: a hospital does not set its own level, region or alliances."""
    if body.id != hospital_id:
        raise registry_service.RegistryError("the body's id differs from the path's")
    await registry_service.register(
        container.registry_uow(), _hospital(body), by=actor, replace=True
    )
    return {"id": hospital_id}


@router.post("/hospitals/{hospital_id}/certifications", status_code=status.HTTP_201_CREATED)
async def add_certification(
    hospital_id: str, body: CertificationIn, container: ContainerDep, actor: CertifyDep
) -> dict[str, str]:
    """Record a QC certification for an item or QC group, valid from..to inclusive (qc)."""
    cert = registry_service.certification(
        container.reference_rules().catalog,
        hospital_id,
        body.scope,
        body.body,
        body.valid_from,
        body.valid_to,
    )
    await registry_service.certify(container.registry_uow(), cert, body.reference, by=actor)
    return {"hospital": hospital_id, "scope": body.scope}


@router.get("/catalog", dependencies=[READ])
async def catalog(container: ContainerDep, region: str | None = None) -> dict[str, object]:
    """The item catalog, as seen from a region when one is given (overrides applied)."""
    cat = container.reference_rules().catalog
    view = cat.for_region(region) if region else cat
    return {
        "version": view.version,
        "region": region,
        "negative_list": sorted(view.negative_list),
        "items": [
            {
                "code": i.code,
                "kind": i.kind.value,
                "category": i.category,
                "name": {"zh": i.name_zh, "en": i.name_en},
                "loinc": list(i.loinc),
                "recognizable": i.recognizable and i.code not in view.negative_list,
                "validity_days": i.validity_days,
                "qc_group": i.qc_group,
                "fees": {t: f"{v:.2f}" for t, v in i.fees.items()},
                "components": list(i.components),
                "modality": i.modality,
                "body_site": i.body_site,
                "laterality": i.laterality,
                "contrast": i.contrast,
            }
            for i in view.items.values()
        ],
    }


def _hospital(body: HospitalIn) -> registry.Hospital:
    return registry.Hospital(
        body.id,
        body.name,
        body.region,
        body.level,
        grade=body.grade,
        ownership=body.ownership,
        price_tier=body.price_tier,
        alliances=frozenset(body.alliances),
        timezone=body.timezone,
    )
