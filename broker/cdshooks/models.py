"""Request bodies of CDS Hooks 2.0: a hook call and feedback (field names as the spec's).

Unknown fields are kept (the spec reserves `extension` and hooks may add context); the
FHIR access token is a secret: it is never logged, stored or echoed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: SecretStr
    token_type: str = "Bearer"  # noqa: S105 (a token type, not a secret)
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None


class HookRequest(BaseModel):
    """`POST {baseUrl}/cds-services/{id}`."""

    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1, max_length=100)
    hookInstance: str = Field(min_length=1, max_length=200)  # the spec's field names
    fhirServer: str | None = Field(default=None, max_length=1000)
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None


class Coding(BaseModel):
    model_config = ConfigDict(extra="allow")

    system: str | None = Field(default=None, max_length=300)
    code: str = Field(min_length=1, max_length=200)
    display: str | None = Field(default=None, max_length=500)


class OverrideReason(BaseModel):
    model_config = ConfigDict(extra="allow")

    reason: Coding | None = None
    userComment: str | None = Field(default=None, max_length=2000)


class AcceptedSuggestion(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=100)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="allow")

    card: str = Field(min_length=1, max_length=100)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime


class FeedbackRequest(BaseModel):
    """`POST {baseUrl}/cds-services/{id}/feedback`."""

    model_config = ConfigDict(extra="allow")

    feedback: list[Feedback] = Field(min_length=1, max_length=100)
