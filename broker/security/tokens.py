"""Bearer tokens for the API: JWTs (HS256) that mrb issues with `mrb token issue`.

The key lives in the data dir beside the other keys; API processes that share the data
dir (or its keys/) accept each other's tokens. A token names one person or system, one
role and one hospital, and expires.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from broker.domain.actors import ALL_HOSPITALS, Actor, Role

ISSUER = "mrb"
AUDIENCE = "mrb-api"
ALGORITHM = "HS256"


class InvalidToken(Exception):
    """A missing, malformed, expired or forged token; the message says which."""


class TokenService:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the token key must be at least 32 bytes")
        self._key = key

    def issue(
        self,
        subject: str,
        role: Role,
        hospital: str,
        *,
        ttl: timedelta = timedelta(hours=8),
        now: datetime | None = None,
    ) -> str:
        if not subject.strip():
            raise ValueError("a token needs a subject (the user or system it is for)")
        if role is Role.DOCTOR and hospital == ALL_HOSPITALS:
            raise ValueError("a doctor token is for one hospital, not '*'")
        issued = now or datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role.value,
            "hospital": hospital,
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Actor:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; issue a new one") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        try:
            role = Role(str(claims.get("role")))
        except ValueError:
            raise InvalidToken(f"unknown role {claims.get('role')!r}") from None
        hospital = claims.get("hospital")
        if not isinstance(hospital, str) or not hospital:
            raise InvalidToken("the token names no hospital")
        return Actor(name=str(claims["sub"]), role=role, hospital=hospital)
