"""Typed dependencies for route handlers: the container and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.security.tokens import InvalidToken
from broker.services.errors import ServiceError


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]

_bearer = HTTPBearer(auto_error=False, description="a token from `mrb token issue`")


def get_actor(
    request: Request,
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """The token's caller, also left in request.state.actor for the access log."""
    if credentials is None:
        raise ServiceError(
            401,
            "Authentication required",
            "send `Authorization: Bearer <token>`; an administrator issues tokens with "
            "`mrb token issue --role R --hospital H --subject NAME`",
        )
    try:
        actor = container.tokens().verify(credentials.credentials)
    except InvalidToken as exc:
        raise ServiceError(401, "Invalid token", str(exc)) from None
    request.state.actor = actor
    return actor


def require(*roles: Role) -> Callable[[Actor], Actor]:
    """A dependency that admits only callers holding one of `roles`."""

    def check(actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
        if actor.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ServiceError(
                403, "Forbidden", f"this needs the role {allowed}; the token's role is {actor.role}"
            )
        return actor

    return check


DoctorDep = Annotated[Actor, Depends(require(Role.DOCTOR))]
FinanceDep = Annotated[Actor, Depends(require(Role.FINANCE, Role.ADMIN))]
AdminDep = Annotated[Actor, Depends(require(Role.ADMIN))]
