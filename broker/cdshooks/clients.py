"""Registering the EHRs (CDS clients) allowed to call the CDS Services: what may be
registered (public keys only, https, registered FHIR servers, the origins of a HIS's
launching pages), stored through the `CdsClients` port (broker/storage/cds_store.py)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from broker.cdshooks.patients import fhir_base
from broker.ports.cds import CdsClients, ClientRow, RegisteredClient

# JWK members that only private or symmetric keys have: never registered.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_FHIR_SERVERS = 20
MAX_LAUNCH_ORIGINS = 10
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
# An ASCII host name (IDN as punycode) or IPv4 address; IPv6 is checked by urlsplit.
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class ClientRegistrationError(ValueError):
    """A client registration that cannot be stored as given (the message says why)."""


async def register_client(
    clients: CdsClients,
    issuer: str,
    hospital_id: str,
    jwks_url: str | None = None,
    jwks: dict[str, Any] | str | None = None,
    *,
    fhir_servers: Sequence[str] = (),
    launch_origins: Sequence[str] = (),
    allow_http_loopback: bool = False,
    by: str = "admin",
    now: datetime | None = None,
) -> None:
    """Allow an EHR to call the CDS Services: its JWT issuer, hospital and public keys,
    and the FHIR servers mrb may read the Patient from with the EHR's token.

    Exactly one of `jwks_url` (https; http only for localhost) or `jwks` (a JWK Set of
    public keys, each with a `kid`) is given. `fhir_servers` are base URLs (https; http
    for localhost only with `allow_http_loopback`); none: the EHR must prefetch the
    Patient. `launch_origins`: for a HIS that opens the launch page (docs/his-launch.md),
    the origins of its pages that may frame it and receive its decision (https; http for
    localhost only with `allow_http_loopback`; see `launch_origin`). Registering an issuer
    again replaces it (key rotation, a new URL, its servers and origins) and un-revokes it.
    """
    issuer = issuer.strip()
    if not issuer or len(issuer) > 300:
        raise ClientRegistrationError("the issuer (the JWT's iss) must have 1-300 characters")
    if (jwks_url is None) == (jwks is None):
        raise ClientRegistrationError("give either a JWKS URL or a JWK Set, not both or neither")
    if jwks_url is not None:
        _check_url(jwks_url)
    keys = _check_jwks(jwks) if jwks is not None else None
    servers = _check_servers(fhir_servers, allow_http_loopback)
    origins = check_launch_origins(launch_origins, allow_http_loopback)
    if not await clients.hospital_exists(hospital_id):
        raise ClientRegistrationError(f"hospital {hospital_id!r} is not registered")
    client = RegisteredClient(issuer, hospital_id, jwks_url, keys, tuple(servers), origins)
    await clients.put(client, by=by, at=now or datetime.now(UTC))


async def set_fhir_servers(
    clients: CdsClients,
    issuer: str,
    fhir_servers: Sequence[str],
    *,
    allow_http_loopback: bool = False,
) -> bool:
    """Replace the FHIR servers of a registered client (none: prefetch only); False when
    there is no such client."""
    return await clients.set_fhir_servers(issuer, _check_servers(fhir_servers, allow_http_loopback))


async def set_launch_origins(
    clients: CdsClients,
    issuer: str,
    origins: Sequence[str],
    *,
    allow_http_loopback: bool = False,
) -> bool:
    """Replace the HIS launch origins of a registered client (none: no page may frame its
    launches); False when there is no such client."""
    checked = check_launch_origins(origins, allow_http_loopback)
    return await clients.set_launch_origins(issuer, checked)


def launch_origin(url: str, *, allow_http_loopback: bool = False) -> str:
    """The origin a HIS page is served from, as CSP frame-ancestors and postMessage name
    it: scheme://host[:port], lower case, without the scheme's default port. https only;
    http for localhost, 127.0.0.1 and [::1] only with `allow_http_loopback` (tests and
    development). No path (a bare trailing "/" is dropped), query, fragment, user,
    wildcard or non-ASCII host (use punycode)."""
    given = url.strip()
    if given.endswith("/") and given.count("/") == 3:
        given = given[:-1]
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError:
        raise ClientRegistrationError(f"launch origin {url!r} is not a URL") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ClientRegistrationError(f"launch origin {url!r}: scheme://host[:port] expected")
    if parts.path or parts.query or parts.fragment or "?" in given or "#" in given:
        raise ClientRegistrationError(
            f"launch origin {url!r}: an origin has no path, query or fragment"
        )
    if parts.username is not None or "@" in parts.netloc:
        raise ClientRegistrationError(f"launch origin {url!r}: no user or password")
    ipv6 = ":" in host
    if ipv6:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ClientRegistrationError(f"launch origin {url!r}: not an IPv6 address") from None
    elif not _HOST.match(host):
        raise ClientRegistrationError(
            f"launch origin {url!r}: the host must be an ASCII name (punycode) or an address"
        )
    if parts.scheme == "http" and not (allow_http_loopback and host in _LOOPBACK):
        raise ClientRegistrationError(
            f"launch origin {url!r} must be https (http for localhost only in tests and "
            "development: MRB_CDS_ALLOW_HTTP_LOOPBACK)"
        )
    if port == {"https": 443, "http": 80}[parts.scheme]:
        port = None
    shown = f"[{host}]" if ipv6 else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None else "")


def check_launch_origins(
    origins: Sequence[str], allow_http_loopback: bool = False
) -> tuple[str, ...]:
    """The origins as stored (see `launch_origin`), duplicates dropped."""
    out: list[str] = []
    for url in origins:
        origin = launch_origin(url, allow_http_loopback=allow_http_loopback)
        if origin not in out:
            out.append(origin)
    if len(out) > MAX_LAUNCH_ORIGINS:
        raise ClientRegistrationError(f"at most {MAX_LAUNCH_ORIGINS} launch origins per client")
    return tuple(out)


async def revoke_client(clients: CdsClients, issuer: str, *, now: datetime | None = None) -> bool:
    """Stop accepting the client's JWTs; False when there is no such active client."""
    return await clients.revoke(issuer, now or datetime.now(UTC))


async def list_clients(clients: CdsClients) -> list[ClientRow]:
    return await clients.all()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ClientRegistrationError("the JWKS URL must be https (http only for localhost)")
    if not parts.hostname or len(url) > 1000:
        raise ClientRegistrationError("the JWKS URL must be an absolute URL of <= 1000 chars")


def _check_servers(servers: Sequence[str], allow_http_loopback: bool) -> list[str]:
    out: list[str] = []
    for url in servers:
        try:
            base = fhir_base(url, allow_http_loopback=allow_http_loopback)
        except ValueError as exc:
            raise ClientRegistrationError(str(exc)) from None
        if base not in out:
            out.append(base)
    if len(out) > MAX_FHIR_SERVERS:
        raise ClientRegistrationError(f"at most {MAX_FHIR_SERVERS} FHIR servers per CDS client")
    return out


def _check_jwks(jwks: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(jwks, str):
        try:
            jwks = json.loads(jwks)
        except ValueError:
            raise ClientRegistrationError("the JWK Set is not JSON") from None
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ClientRegistrationError('a JWK Set is {"keys": [...]} with at least one key')
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str) or not key["kid"]:
            raise ClientRegistrationError("every key of the JWK Set needs a kid")
        if key.get("kty") not in ("EC", "RSA"):
            raise ClientRegistrationError(f"key {key['kid']!r}: kty must be EC or RSA")
        if _PRIVATE_MEMBERS & key.keys():
            raise ClientRegistrationError(
                f"key {key['kid']!r} holds private key material: register public keys only"
            )
    return {"keys": keys}
