"""Every dependency of every route is a coroutine (or an object whose __call__ is one).

FastAPI runs a plain function dependency in its thread pool: a thread hop on each request
that uses it. Profiling the check endpoint found one on every request (the container
getter), about 8 % of the API's CPU and a wait for a free thread under load.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.settings import Settings


def _routes(routes: list[Any]) -> Iterator[tuple[str, Dependant]]:
    """Each route's path and dependant; this FastAPI keeps included routers as objects
    whose effective routes it builds on demand (`effective_route_contexts`)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route.path, route.dependant
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for context in contexts():
                yield context.path, context.dependant


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _is_coroutine(call: object) -> bool:
    if inspect.iscoroutinefunction(call):
        return True
    # An instance (HTTPBearer, a duty check): its class's __call__ decides.
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(type(call).__call__)


async def test_no_route_dependency_runs_in_the_thread_pool(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db")
    container = Container.build(settings)
    try:
        app = create_app(container, role="all")
        routes = list(_routes(app.routes))
        paths = {path for path, _ in routes}
        assert {
            "/api/v1/recognition/check",
            "/fhir/{resource_type}",
            "/cds-services/{service_id}",
        } <= paths
        sync = sorted(
            {
                f"{path}: {getattr(d.call, '__qualname__', d.call)}"
                for path, dependant in routes
                for d in _dependencies(dependant)
                if d.call is not None and not _is_coroutine(d.call)
            }
        )
        assert sync == []
    finally:
        await container.close()
