"""The bench's API process: the app `mrb serve` runs, on the same server configuration,
plus one route only the bench has, the baseline of the check latency figures.

`POST /bench/person-lookup` takes a check's body, authenticates the doctor as the check
does and finds the person through the check's own unit of work, then answers: what a
check costs before it reads results, decides and records. It is mounted here, on the
app object, never among the product's routes.
"""

from __future__ import annotations

import logging

import uvicorn
from fastapi import APIRouter, FastAPI

from broker.api.app import create_app
from broker.api.deps import ContainerDep, DoctorDep
from broker.api.schemas import CheckIn
from broker.bootstrap import Container
from broker.domain.identifiers import normalise
from broker.runtime import server_config
from broker.settings import Settings

LOOKUP_PATH = "/bench/person-lookup"


def mount_lookup(app: FastAPI) -> None:
    router = APIRouter()

    @router.post(LOOKUP_PATH)
    async def person_lookup(
        body: CheckIn, container: ContainerDep, actor: DoctorDep
    ) -> dict[str, bool]:
        ident = normalise(body.patient.system, body.patient.value, hospital=body.ordering_hospital)
        if ident is None:
            return {"found": False}
        async with container.check_uow() as uow:
            found = await uow.people.find(ident)
        return {"found": found is not None}

    app.include_router(router)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings()
    container = Container.build(settings)
    container.reference_rules()  # as `mrb serve` does: the catalog read before serving
    app = create_app(container, role="api")
    mount_lookup(app)
    uvicorn.Server(server_config(app, settings)).run()


if __name__ == "__main__":
    main()
