"""CDS Hooks data: the client registry, the jti replay guard, draft orders and cards."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.cdshooks.auth import RegisteredClient
from broker.cdshooks.patients import fhir_base
from broker.security.payload_cipher import PayloadCipher
from broker.security.sealed_fields import open_json, seal_json
from broker.storage.cds_tables import cds_card, cds_client, cds_draft_order, cds_jti
from broker.storage.tables import hospital, recognition_outcome

# JWK members that only private or symmetric keys have: never registered.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class ClientRegistrationError(ValueError):
    """A client registration that cannot be stored as given (the message says why)."""


# -- the client registry -----------------------------------------------------------------


@dataclass(frozen=True)
class ClientRow:
    issuer: str
    hospital: str
    jwks_url: str | None
    keys: int | None  # inline JWK Set: how many keys
    added_by: str
    added_at: datetime
    revoked_at: datetime | None
    fhir_servers: tuple[str, ...] = ()


async def register_client(
    session: AsyncSession,
    issuer: str,
    hospital_id: str,
    jwks_url: str | None = None,
    jwks: dict[str, Any] | str | None = None,
    *,
    fhir_servers: Sequence[str] = (),
    allow_http_loopback: bool = False,
    by: str = "admin",
    now: datetime | None = None,
) -> None:
    """Allow an EHR to call the CDS Services: its JWT issuer, hospital and public keys,
    and the FHIR servers mrb may read the Patient from with the EHR's token.

    Exactly one of `jwks_url` (https; http only for localhost) or `jwks` (a JWK Set of
    public keys, each with a `kid`) is given. `fhir_servers` are base URLs (https; http
    for localhost only with `allow_http_loopback`); none: the EHR must prefetch the
    Patient. Registering an issuer again replaces it (key rotation, a new URL, its
    servers) and un-revokes it.
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
    known = await session.scalar(select(hospital.c.id).where(hospital.c.id == hospital_id))
    if known is None:
        raise ClientRegistrationError(f"hospital {hospital_id!r} is not registered")
    values = {
        "hospital_id": hospital_id,
        "jwks_url": jwks_url,
        "jwks": keys,
        "fhir_servers": servers,
        "added_by": by,
        "added_at": now or datetime.now(UTC),
        "revoked_at": None,
    }
    done = await session.execute(
        update(cds_client).where(cds_client.c.issuer == issuer).values(**values)
    )
    if getattr(done, "rowcount", 0) == 0:
        await session.execute(cds_client.insert().values(issuer=issuer, **values))


async def set_fhir_servers(
    session: AsyncSession,
    issuer: str,
    fhir_servers: Sequence[str],
    *,
    allow_http_loopback: bool = False,
) -> bool:
    """Replace the FHIR servers of a registered client (none: prefetch only); False when
    there is no such client."""
    servers = _check_servers(fhir_servers, allow_http_loopback)
    done = await session.execute(
        update(cds_client).where(cds_client.c.issuer == issuer).values(fhir_servers=servers)
    )
    return bool(getattr(done, "rowcount", 0))


async def revoke_client(session: AsyncSession, issuer: str, *, now: datetime | None = None) -> bool:
    done = await session.execute(
        update(cds_client)
        .where(cds_client.c.issuer == issuer, cds_client.c.revoked_at.is_(None))
        .values(revoked_at=now or datetime.now(UTC))
    )
    return bool(getattr(done, "rowcount", 0))


async def list_clients(session: AsyncSession) -> list[ClientRow]:
    rows = await session.execute(select(cds_client).order_by(cds_client.c.issuer))
    return [
        ClientRow(
            r.issuer,
            r.hospital_id,
            r.jwks_url,
            len(r.jwks.get("keys", [])) if isinstance(r.jwks, dict) else None,
            r.added_by,
            r.added_at,
            r.revoked_at,
            tuple(r.fhir_servers or ()),
        )
        for r in rows
    ]


class DbClientRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def client(self, issuer: str) -> RegisteredClient | None:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(cds_client).where(
                        cds_client.c.issuer == issuer, cds_client.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            return None
        return RegisteredClient(
            row.issuer, row.hospital_id, row.jwks_url, row.jwks, tuple(row.fhir_servers or ())
        )


class DbReplayGuard:
    """Used jtis, kept until their JWT expires (then purged)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        now = datetime.now(UTC)
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(delete(cds_jti).where(cds_jti.c.expires_at < now))
                await s.execute(
                    cds_jti.insert().values(issuer=issuer, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True


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
    if len(out) > 20:
        raise ClientRegistrationError("at most 20 FHIR servers per CDS client")
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


# -- draft orders: order-select and order-sign share one check ----------------------------


@dataclass(frozen=True)
class DraftCheck:
    check_id: str
    item_index: int
    created_at: datetime


async def drafts(
    session: AsyncSession, hospital_id: str, pseudonym: str, refs: Iterable[str]
) -> dict[tuple[str, str], DraftCheck]:
    """(draft ref, order key) -> the check item it was decided in."""
    wanted = sorted(set(refs))
    if not wanted:
        return {}
    rows = await session.execute(
        select(cds_draft_order).where(
            cds_draft_order.c.hospital_id == hospital_id,
            cds_draft_order.c.patient_pseudonym == pseudonym,
            cds_draft_order.c.draft_ref.in_(wanted),
        )
    )
    return {
        (r.draft_ref, r.order_key): DraftCheck(r.check_id, r.item_index, r.created_at) for r in rows
    }


async def remember_draft(
    session: AsyncSession,
    hospital_id: str,
    pseudonym: str,
    draft_ref: str,
    order_key: str,
    check: DraftCheck,
) -> None:
    """Point the draft order at a check item (a newer check replaces an older one)."""
    key = (
        cds_draft_order.c.hospital_id == hospital_id,
        cds_draft_order.c.patient_pseudonym == pseudonym,
        cds_draft_order.c.draft_ref == draft_ref,
        cds_draft_order.c.order_key == order_key,
    )
    values = {
        "check_id": check.check_id,
        "item_index": check.item_index,
        "created_at": check.created_at,
    }
    done = await session.execute(update(cds_draft_order).where(*key).values(**values))
    if getattr(done, "rowcount", 0) == 0:
        await session.execute(
            cds_draft_order.insert().values(
                hospital_id=hospital_id,
                patient_pseudonym=pseudonym,
                draft_ref=draft_ref,
                order_key=order_key,
                **values,
            )
        )


# -- cards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardRow:
    uuid: str
    suggestion_uuid: str | None
    service_id: str
    issuer: str
    hospital_id: str
    user_id: str
    check_id: str
    item_index: int
    kind: str
    draft_ref: str | None
    content: dict[str, Any]
    created_at: datetime


def _seal_content(cipher: PayloadCipher, card_uuid: str, content: dict[str, Any]) -> dict[str, str]:
    """A card names the prior result (its summary, hospital, date): sealed like the index's
    clinical text, inside the JSON column as {"sealed": base64 envelope}."""
    blob = seal_json(cipher, content, context=f"cds-card|{card_uuid}")
    return {"sealed": base64.b64encode(blob).decode()}


def _open_content(cipher: PayloadCipher, card_uuid: str, stored: Any) -> dict[str, Any]:
    if isinstance(stored, dict) and set(stored) == {"sealed"}:
        blob = base64.b64decode(stored["sealed"])
        opened: dict[str, Any] = open_json(cipher, blob, context=f"cds-card|{card_uuid}")
        return opened
    return dict(stored)  # a card stored before sealing


async def save_card(session: AsyncSession, card: CardRow, cipher: PayloadCipher) -> None:
    await session.execute(
        cds_card.insert().values(
            uuid=card.uuid,
            suggestion_uuid=card.suggestion_uuid,
            service_id=card.service_id,
            issuer=card.issuer,
            hospital_id=card.hospital_id,
            user_id=card.user_id[:200],
            check_id=card.check_id,
            item_index=card.item_index,
            kind=card.kind,
            draft_ref=card.draft_ref,
            content=_seal_content(cipher, card.uuid, card.content),
            created_at=card.created_at,
        )
    )


async def cards_by_uuid(
    session: AsyncSession, uuids: Sequence[str], cipher: PayloadCipher
) -> dict[str, CardRow]:
    if not uuids:
        return {}
    rows = await session.execute(select(cds_card).where(cds_card.c.uuid.in_(sorted(set(uuids)))))
    return {r.uuid: _card(r, cipher) for r in rows}


async def latest_cards(
    session: AsyncSession,
    items: Iterable[tuple[str, int]],
    hospital_id: str,
    cipher: PayloadCipher,
) -> dict[tuple[str, int], CardRow]:
    """The last card issued for each (check, item) to the hospital's clients."""
    wanted = set(items)
    if not wanted:
        return {}
    rows = await session.execute(
        select(cds_card)
        .where(
            cds_card.c.check_id.in_(sorted({c for c, _ in wanted})),
            cds_card.c.hospital_id == hospital_id,
        )
        .order_by(cds_card.c.created_at)
    )
    out: dict[tuple[str, int], CardRow] = {}
    for r in rows:
        if (r.check_id, r.item_index) in wanted:
            out[(r.check_id, r.item_index)] = _card(r, cipher)
    return out


async def decided(session: AsyncSession, check_ids: Iterable[str]) -> set[tuple[str, int]]:
    """(check, item) pairs that already have the doctor's outcome."""
    wanted = sorted(set(check_ids))
    if not wanted:
        return set()
    rows = await session.execute(
        select(recognition_outcome.c.check_id, recognition_outcome.c.item_index).where(
            recognition_outcome.c.check_id.in_(wanted)
        )
    )
    return {(r.check_id, r.item_index) for r in rows}


def _card(r: Any, cipher: PayloadCipher) -> CardRow:
    return CardRow(
        r.uuid,
        r.suggestion_uuid,
        r.service_id,
        r.issuer,
        r.hospital_id,
        r.user_id,
        r.check_id,
        r.item_index,
        r.kind,
        r.draft_ref,
        _open_content(cipher, r.uuid, r.content),
        r.created_at,
    )
