"""Who the patient is: identifiers from the prefetched Patient or the EHR's FHIR server.

mrb never guesses a patient: only identifiers the EHR's own Patient resource carries are
used (a resident ID first, then the hospital's own identifiers, which link only within
that hospital). The EHR's FHIR access token is used for one read and then forgotten, and
only on a FHIR server registered for that EHR (`mrb cds add --fhir-server`): a request's
`fhirServer` is compared with the client's list before anything is sent anywhere, so a
forged `fhirServer` can neither make mrb call another host nor carry the token there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from broker.cdshooks.models import FhirAuthorization
from broker.cdshooks.orders import FHIR_ID
from broker.domain.identifiers import (
    DEFAULT_SYSTEM_ALIASES,
    RESIDENT_ID_SYSTEM,
    InvalidIdentifier,
    validate_resident_id,
)

PREFETCH_KEY = "patient"
FHIR_TIMEOUT_SECONDS = 3.0


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


class PatientUnavailable(Exception):
    """Neither prefetch nor the EHR's FHIR server gave the Patient (HTTP 412 per the spec)."""


class FhirServerNotAllowed(PatientUnavailable):
    """The request's fhirServer is not one registered for its client: nothing was sent."""


def fhir_base(url: str, *, allow_http_loopback: bool = False) -> str:
    """A FHIR server base URL in one canonical form, or ValueError saying what is wrong.

    https only (http only for 127.0.0.1, localhost or [::1], and only when allowed: tests
    and development); no user, query or fragment; scheme and host lower-cased, the
    default port dropped, no trailing slash. Two spellings of one server compare equal.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{url[:100]!r} is not a URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{url[:100]!r} is not an absolute URL")
    if scheme != "https" and not (
        scheme == "http" and host in LOOPBACK_HOSTS and allow_http_loopback
    ):
        raise ValueError(
            f"{url[:100]!r}: FHIR servers must be https (http only for localhost, in tests)"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url[:100]!r}: no user or password in the URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"{url[:100]!r}: a base URL has no query or fragment")
    if len(url) > 1000:
        raise ValueError("a FHIR server URL has at most 1000 characters")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def allowed_server(
    fhir_server: str, registered: Sequence[str], *, allow_http_loopback: bool
) -> str:
    """The canonical base of `fhir_server` if it is one of `registered`, else
    FhirServerNotAllowed (the server is not contacted)."""
    try:
        base = fhir_base(fhir_server, allow_http_loopback=allow_http_loopback)
    except ValueError as exc:
        raise FhirServerNotAllowed(f"fhirServer refused: {exc}") from None
    if base not in registered:
        raise FhirServerNotAllowed(
            "fhirServer is not a FHIR server registered for this CDS client "
            "(`mrb cds add --fhir-server`); its token was not used"
        )
    return base


@dataclass(frozen=True)
class PatientSource:
    """Where the Patient comes from: prefetch when given, else a read on the FHIR server,
    which must be one of `allowed` (the client's registered bases)."""

    prefetch: dict[str, Any] | None
    fhir_server: str | None
    authorization: FhirAuthorization | None
    allowed: tuple[str, ...] = ()
    allow_http_loopback: bool = False


def identifiers(patient: object, patient_id: str) -> list[tuple[str, str]]:
    """(system, value) pairs of a Patient resource: valid resident IDs first.

    A resource that is not a Patient, or is another patient than `context.patientId`,
    gives nothing (never guess).
    """
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        return []
    pid = patient.get("id")
    if pid is not None and pid != patient_id:
        return []
    national: list[tuple[str, str]] = []
    local: list[tuple[str, str]] = []
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if not isinstance(value, str) or not value.strip():
            continue
        system = system.strip() if isinstance(system, str) else ""
        canonical = DEFAULT_SYSTEM_ALIASES.get(system, DEFAULT_SYSTEM_ALIASES.get(system.lower()))
        if canonical == RESIDENT_ID_SYSTEM:
            try:
                national.append((RESIDENT_ID_SYSTEM, validate_resident_id(value)))
            except InvalidIdentifier:
                continue  # a mistyped resident ID links to nobody
        elif system:
            local.append((system, value.strip()))
    return _unique(national + local)


async def patient_resource(
    source: PatientSource,
    patient_id: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any] | None:
    """The Patient resource, or None when the EHR says there is none (prefetch null, 404).

    Raises PatientUnavailable when it was neither prefetched nor readable.
    """
    if source.prefetch is not None and PREFETCH_KEY in source.prefetch:
        given = source.prefetch[PREFETCH_KEY]
        if given is None:  # the spec's "no data for this template"
            return None
        if isinstance(given, dict) and given.get("resourceType") == "Patient":
            return given
    if not source.fhir_server:
        raise PatientUnavailable("the Patient was not prefetched and no fhirServer was given")
    base = allowed_server(
        source.fhir_server, source.allowed, allow_http_loopback=source.allow_http_loopback
    )
    return await read_patient(base, patient_id, source.authorization, transport=transport)


async def read_patient(
    fhir_server: str,
    patient_id: str,
    authorization: FhirAuthorization | None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any] | None:
    """`GET {fhirServer}/Patient/{id}` with the EHR's bearer token; `fhir_server` must
    already be checked against the client's registered servers (`allowed_server`)."""
    if not FHIR_ID.fullmatch(patient_id):
        raise PatientUnavailable("context.patientId is not a FHIR id")
    base = fhir_server.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise PatientUnavailable("fhirServer is not an http(s) URL")
    headers = {"Accept": "application/fhir+json"}
    if authorization is not None:
        token = authorization.access_token.get_secret_value()
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=FHIR_TIMEOUT_SECONDS, follow_redirects=False
        ) as client:
            response = await client.get(f"{base}/Patient/{patient_id}", headers=headers)
    except httpx.HTTPError as exc:
        raise PatientUnavailable(f"the FHIR server did not answer ({type(exc).__name__})") from None
    if response.status_code in (404, 410):
        return None
    if response.status_code != 200:
        raise PatientUnavailable(f"the FHIR server answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise PatientUnavailable("the FHIR server's Patient is not JSON") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Patient":
        raise PatientUnavailable("the FHIR server did not return a Patient")
    return body


def _unique(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in pairs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
