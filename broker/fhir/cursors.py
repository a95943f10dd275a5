"""Paging cursors: opaque to clients, signed (HMAC-SHA256) and bound to the caller.

A cursor carries the search it pages through (with the patient already resolved to an
mrb person id, so no identifier travels in a URL), the offset and page size, who may
use it and until when. A cursor altered, expired, used on another resource type or by
another user is refused. A sealed cursor (`sealed=True`: IHE PDQm, whose search is by
demographics) carries its search encrypted (AES-256-GCM under a key derived from the
cursor key), so no name, birth date or phone number travels in a URL in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.domain.actors import Actor
from broker.domain.errors import Invalid
from broker.fhir.errors import forbidden, invalid

VERSION = 1
DEFAULT_TTL = timedelta(hours=1)
_DOMAIN = b"mrb-fhir-cursor/1"


@dataclass(frozen=True)
class Page:
    """Where a paging link leads: a search (its parameters), an offset and a page size."""

    resource_type: str
    params: tuple[tuple[str, str], ...]
    offset: int
    count: int


class CursorSigner:
    """Issues and opens cursors under one secret key."""

    def __init__(self, key: bytes, *, ttl: timedelta = DEFAULT_TTL) -> None:
        if len(key) < 32:
            raise ValueError("the cursor key must be at least 32 bytes")
        self._key = key
        self._ttl = ttl

    def issue(self, page: Page, actor: Actor, now: datetime, *, sealed: bool = False) -> str:
        params = [list(p) for p in page.params]
        body = {
            "v": VERSION,
            "t": page.resource_type,
            "q": [] if sealed else params,
            "o": page.offset,
            "n": page.count,
            "u": self._binding(actor),
            "x": int((now + self._ttl).timestamp()),
        }
        if sealed:
            body["s"] = _b64(self._seal(json.dumps(params, ensure_ascii=False).encode()))
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def open(self, cursor: str, resource_type: str, actor: Actor, now: datetime) -> Page:
        """The page a cursor leads to; Invalid if it is not valid, NotAllowed if not yours."""
        payload, _, mac = cursor.strip().partition(".")
        try:
            given = _unb64(mac)
        except ValueError:
            raise _refused("it is malformed") from None
        if not payload or not hmac.compare_digest(given, self._mac(payload)):
            raise _refused("its signature does not match (altered, or from another server)")
        try:
            body = json.loads(_unb64(payload))
            query = json.loads(self._unseal(_unb64(body["s"]))) if "s" in body else body["q"]
            page = Page(
                resource_type=str(body["t"]),
                params=tuple((str(k), str(v)) for k, v in query),
                offset=int(body["o"]),
                count=int(body["n"]),
            )
            binding, expires, version = str(body["u"]), int(body["x"]), int(body["v"])
        except (ValueError, KeyError, TypeError, InvalidTag):
            raise _refused("it is malformed") from None
        if version != VERSION:
            raise _refused("it is from another version of mrb")
        if page.resource_type != resource_type:
            raise _refused(f"it pages a {page.resource_type} search, not {resource_type}")
        if not hmac.compare_digest(binding, self._binding(actor)):
            raise forbidden("this paging link was issued to another user: run the search yourself")
        if now.timestamp() > expires:
            raise _refused("it has expired")
        if page.offset < 0 or page.count < 0:
            raise _refused("it is malformed")
        return page

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, _DOMAIN + b"." + payload.encode(), hashlib.sha256).digest()

    def _seal(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self._sealing_key()).encrypt(nonce, data, _DOMAIN)

    def _unseal(self, data: bytes) -> bytes:
        if len(data) < 13:
            raise ValueError("too short")
        return AESGCM(self._sealing_key()).decrypt(data[:12], data[12:], _DOMAIN)

    def _sealing_key(self) -> bytes:
        return hmac.new(self._key, b"seal\0", hashlib.sha256).digest()

    def _binding(self, actor: Actor) -> str:
        who = "\0".join((actor.role.value, actor.hospital, actor.name)).encode()
        return hmac.new(self._key, b"bind\0" + who, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Request:
    """A search request as asked, or as resumed from the paging link it came by."""

    pairs: Sequence[tuple[str, str]]  # the search's parameters
    offset: int = 0
    paged: bool = False  # came by a paging link (its search already checked and counted)


_PAGING_EXTRAS = frozenset({"_format", "_pretty"})


def resume(
    signer: CursorSigner,
    pairs: Sequence[tuple[str, str]],
    resource_type: str,
    actor: Actor,
    now: datetime,
) -> Request:
    """The search a request asks for: its own parameters, or those of its `_cursor`."""
    cursors = [v for k, v in pairs if k == "_cursor"]
    if not cursors:
        return Request(pairs)
    others = [k for k, _ in pairs if k != "_cursor" and k not in _PAGING_EXTRAS]
    if len(cursors) > 1 or others:
        raise invalid(
            "a paging link carries its whole search: send it as given, without "
            f"other parameters ({', '.join(others) or '_cursor twice'})"
        )
    page = signer.open(cursors[0], resource_type, actor, now)
    return Request([*page.params, ("_count", str(page.count))], page.offset, paged=True)


def page_links(
    signer: CursorSigner,
    page: Page,
    *,
    total: int,
    summary_count: bool,
    actor: Actor,
    base: str,
    now: datetime,
    sealed: bool = False,
) -> dict[str, str]:
    """A searchset's links (self, first, previous, next, last) as cursors bound to `actor`
    (the search encrypted in them when `sealed`)."""
    size = page.count

    def link(at: int) -> str:
        where = Page(page.resource_type, page.params, at, size)
        cursor = signer.issue(where, actor, now, sealed=sealed)
        return f"{base}/{page.resource_type}?_cursor={quote(cursor, safe='.')}"

    links = {"self": link(page.offset)}
    if size == 0 or summary_count:
        return links
    links["first"] = link(0)
    if page.offset > 0:
        links["previous"] = link(max(0, page.offset - size))
    if page.offset + size < total:
        links["next"] = link(page.offset + size)
    links["last"] = link(max(0, ((total - 1) // size) * size) if total else 0)
    return links


def _refused(why: str) -> Invalid:
    return invalid(f"the paging cursor cannot be used: {why}; run the search again")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
