"""HIS launch: a signed launch URL opens the recognition check inside the HIS, without
another login (docs/his-launch.md).

The HIS is a registered CDS client (broker/cdshooks/clients.py): it signs the launch JWT
with its registered key, verified by broker/cdshooks/auth.py with the launch URL as the
audience, its `jti` spent in the same replay store. On top of that a launch must:

- live at most five minutes (`exp` - `iat` and `exp` - now),
- name the client's registered hospital (`hospital`), the HIS user (`sub`), one patient
  (`patient`: system + value) and 1-20 items being ordered (`items`), optionally a purpose.

It is exchanged for a short server-side session that can only check that patient, for
those items, as that user of that hospital: the session cookie holds only a random id;
the server keeps its hash, alive for SESSION_LIFETIME, with the launching client, its
hospital, the user and the launch (patient, items, purpose) sealed with the payload
cipher, bound to that hash (the `LaunchStore` port, broker/ports/his_launch.py). The
session ends early when its client is revoked.

Which HIS pages may frame the launch page and receive its decision is the client's
registration (`cds_client.launch_origins`, `mrb cds launch-origins`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from broker.cdshooks.auth import (
    AuthenticatedClient,
    ClientRegistry,
    ClientRejected,
    JwksCache,
    ReplayGuard,
    authenticate,
)
from broker.domain.actors import Actor, Role
from broker.domain.recognition import Order
from broker.ports.his_launch import LaunchSessionRecord, LaunchStore, launch_context
from broker.security.passwords import new_session_id, session_id_hash
from broker.security.payload_cipher import PayloadCipher
from broker.security.sealed_fields import open_json, seal_json

MAX_LAUNCH_LIFETIME = timedelta(minutes=5)
LEEWAY = timedelta(seconds=30)
SESSION_LIFETIME = timedelta(minutes=15)
READ_BACK_WINDOW = timedelta(days=7)  # how long the HIS may read a launched check's decisions
MAX_ITEMS = 20
TOKEN_MAX = 8000  # characters of a launch JWT
COOKIE_MAX = 100  # a session id is 43 characters


class LaunchRefused(Exception):
    """A launch that is not accepted. `reason` is for the audit and the log; `public` for
    the person in front of the HIS (it does not tell an attacker what to fix)."""

    def __init__(
        self, reason: str, *, issuer: str | None = None, hospital: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer = issuer
        self.hospital = hospital


@dataclass(frozen=True)
class LaunchContext:
    """What a launch session may do: one patient, these items, as this HIS user."""

    issuer: str
    hospital: str
    user: str
    patient_system: str
    patient_value: str
    items: tuple[dict[str, Any], ...]
    purpose: str | None
    expires_at: datetime
    session_hash: str

    @property
    def actor(self) -> Actor:
        return Actor(
            self.user, Role.DOCTOR, self.hospital, token_id=f"his-launch:{self.session_hash[:16]}"
        )

    def orders(self) -> tuple[Order, ...]:
        return tuple(order_of(i) for i in self.items)

    def masked_patient(self) -> str:
        v = self.patient_value
        return ("*" * max(len(v) - 4, 0)) + v[-4:] if len(v) > 4 else "****"


@dataclass(frozen=True)
class Launched:
    cookie: str  # the session cookie's value (its id): only ever in the Set-Cookie header
    context: LaunchContext


def _text(value: Any, name: str, maximum: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > maximum:
        raise LaunchRefused(f"claim {name!r} must be a string of 1-{maximum} characters")
    return value.strip()


def _item(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise LaunchRefused("every item must be an object")
    if "modality" in raw:
        modality = _text(raw.get("modality"), "items.modality", 4).upper()
        if not modality.isalpha() or len(modality) < 2:
            raise LaunchRefused("items.modality must be a DICOM modality (CT, MR, US, ...)")
        site = raw.get("body_site")
        site = site.get("code") if isinstance(site, dict) else site
        out: dict[str, Any] = {
            "modality": modality,
            "body_site": _text(site, "items.body_site", 32),
        }
        laterality = raw.get("laterality")
        laterality = laterality.get("code") if isinstance(laterality, dict) else laterality
        if laterality is not None:
            out["laterality"] = _text(laterality, "items.laterality", 32)
        if isinstance(raw.get("contrast"), bool):
            out["contrast"] = raw["contrast"]
        if raw.get("display") is not None:
            out["display"] = _text(raw.get("display"), "items.display", 100)
        return out
    out = {
        "system": _text(raw.get("system"), "items.system", 300),
        "code": _text(raw.get("code"), "items.code", 100),
    }
    if raw.get("display") is not None:
        out["display"] = _text(raw.get("display"), "items.display", 100)
    return out


def order_of(item: dict[str, Any]) -> Order:
    if "modality" in item:
        return Order(
            system=None,
            code=None,
            modality=item["modality"],
            body_site=item["body_site"],
            laterality=item.get("laterality"),
            contrast=item.get("contrast"),
        )
    return Order(system=item["system"], code=item["code"])


def item_code(item: dict[str, Any]) -> str:
    """How the HIS named the item, as it gets it back in the postMessage and read-back."""
    if "modality" in item:
        return f"{item['modality']}|{item['body_site']}"
    return str(item["code"])


def launch_claims(
    claims: dict[str, Any], client: AuthenticatedClient, now: datetime
) -> tuple[str, str, str, tuple[dict[str, Any], ...], str | None]:
    """(user, patient system, patient value, items, purpose) of a verified launch JWT."""
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise LaunchRefused("iat and exp are required numbers")
    if timedelta(seconds=exp - iat) > MAX_LAUNCH_LIFETIME:
        raise LaunchRefused("a launch may live at most 5 minutes (exp - iat)")
    if datetime.fromtimestamp(exp, UTC) - now > MAX_LAUNCH_LIFETIME + LEEWAY:
        raise LaunchRefused("exp is more than 5 minutes ahead")
    hospital = claims.get("hospital")
    if hospital != client.hospital:
        raise LaunchRefused(
            f"hospital {str(hospital)[:40]!r} is not the client's registered {client.hospital}"
        )
    user = _text(claims.get("sub"), "sub", 200)
    patient = claims.get("patient")
    if not isinstance(patient, dict):
        raise LaunchRefused("claim 'patient' must be {system, value}")
    system = _text(patient.get("system"), "patient.system", 300)
    value = _text(patient.get("value"), "patient.value", 100)
    items = claims.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise LaunchRefused(f"claim 'items' must list 1-{MAX_ITEMS} items")
    purpose = claims.get("purpose")
    if purpose is not None:
        purpose = _text(purpose, "purpose", 40)
    return user, system, value, tuple(_item(i) for i in items), purpose


async def launch(
    token: str,
    *,
    audience: str,
    registry: ClientRegistry,
    replay: ReplayGuard,
    jwks_cache: JwksCache,
    store: LaunchStore,
    cipher: PayloadCipher,
    now: datetime | None = None,
) -> Launched:
    """Verify a launch JWT (spending its jti) and open its session; LaunchRefused else."""
    now = now or datetime.now(UTC)
    if not token or len(token) > TOKEN_MAX:
        raise LaunchRefused("no launch token, or one too long")
    try:
        client = await authenticate(
            token,
            audience=audience,
            registry=registry,
            replay=replay,
            jwks_cache=jwks_cache,
            now=now,
        )
    except ClientRejected as exc:
        raise LaunchRefused(str(exc), issuer=_unverified_issuer(token)) from None
    # The signature and registered claims were verified above; now the launch's own.
    claims = jwt.decode(token, options={"verify_signature": False})
    try:
        user, system, value, items, purpose = launch_claims(claims, client, now)
    except LaunchRefused as exc:
        raise LaunchRefused(exc.reason, issuer=client.issuer, hospital=client.hospital) from None
    session_id = new_session_id()
    session_hash = session_id_hash(session_id)
    expires_at = now + SESSION_LIFETIME
    context = LaunchContext(
        client.issuer,
        client.hospital,
        user,
        system,
        value,
        items,
        purpose,
        expires_at,
        session_hash,
    )
    sealed = seal_json(cipher, _sealed_part(context), context=launch_context(session_hash))
    record = LaunchSessionRecord(client.issuer, client.hospital, user, sealed, now, expires_at)
    await store.open_session(session_hash, record)
    await store.record_launch(
        action="his.launch",
        actor=user,
        role=Role.DOCTOR.value,
        hospital=client.hospital,
        detail={
            "client": client.issuer,
            "session": session_hash[:16],
            "items": [item_code(i) for i in items],
            "purpose": purpose,
        },
    )
    return Launched(session_id, context)


async def session(
    cookie: str | None, *, store: LaunchStore, cipher: PayloadCipher, now: datetime | None = None
) -> LaunchContext | None:
    """The live launch session of a cookie, or None (absent, unknown, expired, ended, or
    its client revoked)."""
    if not cookie or len(cookie) > COOKIE_MAX:
        return None
    session_hash = session_id_hash(cookie)
    record = await store.live_session(session_hash, now or datetime.now(UTC))
    if record is None:
        return None
    try:
        data = open_json(cipher, record.sealed_launch, context=launch_context(session_hash))
        return _context(record, data, session_hash)
    except Exception:  # sealed for another row, or with a key no longer held: no session
        return None


def session_id_of(cookie: str) -> str:
    """The session id a cookie holds (the CSRF token is keyed with it)."""
    return cookie


async def refused(store: LaunchStore, exc: LaunchRefused) -> None:
    """Audit a refused launch (no patient identifier: the claims were not trusted)."""
    await store.record_launch(
        action="his.launch.refused",
        actor=f"his-client:{exc.issuer or 'unknown'}",
        role="his-client",
        hospital=exc.hospital,
        detail={"client": exc.issuer, "reason": exc.reason[:500]},
    )


def _unverified_issuer(token: str) -> str | None:
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss[:300] if isinstance(iss, str) else None


def _sealed_part(c: LaunchContext) -> dict[str, Any]:
    """What of a launch is sealed at rest: the patient, the items, the purpose."""
    return {
        "patient": {"system": c.patient_system, "value": c.patient_value},
        "items": list(c.items),
        "purpose": c.purpose,
    }


def _context(r: LaunchSessionRecord, d: dict[str, Any], session_hash: str) -> LaunchContext:
    return LaunchContext(
        issuer=r.issuer,
        hospital=r.hospital,
        user=r.user,
        patient_system=d["patient"]["system"],
        patient_value=d["patient"]["value"],
        items=tuple(d["items"]),
        purpose=d.get("purpose"),
        expires_at=r.expires_at,
        session_hash=session_hash,
    )
