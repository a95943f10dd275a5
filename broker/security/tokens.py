"""Bearer tokens for the API: JWTs signed with Ed25519 (EdDSA) by the token issuer.

The issuer's private key (keys/token-issuer.key) is on the issuing host only: `mrb token
issue` signs with it. API hosts hold public keys alone — keys/token-issuer.pub and
MRB_TOKEN_PUBLIC_KEYS — each named by its key id (`kid` in the JWT header), so an API
host can verify tokens but never make one. Rotation: trust the new public key on every
API host, issue with the new private key, retire the old public key once the tokens it
signed have expired. Only EdDSA is accepted; HS256 (a shared secret), `none` and every
other algorithm are refused before any key is used.

A token names one person or system (`sub`), one role, one hospital ('*' for platform
roles), whether a person or a machine holds it (`kind`), and expires no later than the
cap for its kind. Its `jti` is recorded in the database when issued (broker/services/
tokens.py), where it can be listed and revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from broker.domain.actors import ALL_HOSPITALS, MACHINE_ROLES, Actor, Role
from broker.security.keys import MissingKey, create_private_file, replace_private_file

logger = logging.getLogger(__name__)

ISSUER = "mrb"
AUDIENCE = "mrb-api"
ALGORITHM = "EdDSA"
ISSUER_KEY_FILE = "token-issuer.key"
PUBLIC_KEYS_FILE = "token-issuer.pub"
CLOCK_SKEW = timedelta(seconds=30)
_MAX_SUBJECT = 200

_PEM = re.compile(r"-----BEGIN PUBLIC KEY-----(.+?)-----END PUBLIC KEY-----", re.S)
_NAMED = re.compile(r"^([A-Za-z0-9._:-]{1,64})=([A-Za-z0-9+/]+={0,2})$")
_BARE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class InvalidToken(Exception):
    """A missing, malformed, expired, forged, over-long or revoked token; the message says
    which."""


class TokenKind(StrEnum):
    PERSON = "person"
    MACHINE = "machine"


@dataclass(frozen=True)
class Lifetimes:
    """The longest a token may live, by who holds it (MRB_TOKEN_MAX_TTL_PEOPLE/_MACHINES)."""

    people: timedelta = timedelta(hours=8)
    machines: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        if self.people <= timedelta(0) or self.machines <= timedelta(0):
            raise ValueError("token lifetime caps must be positive")

    def cap(self, kind: TokenKind) -> timedelta:
        return self.machines if kind is TokenKind.MACHINE else self.people


def kind_for(role: Role, machine: bool) -> TokenKind:
    """The token's kind: an adapter is always a machine; a person otherwise, unless a
    machine token is asked for a role a system may hold."""
    if role is Role.ADAPTER:
        return TokenKind.MACHINE
    if machine and role not in MACHINE_ROLES:
        names = ", ".join(sorted(r.value for r in MACHINE_ROLES))
        raise ValueError(f"only {names} tokens may be held by a machine, not {role.value}")
    return TokenKind.MACHINE if machine else TokenKind.PERSON


# --- keys ---------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A public key's id: `ti-` and the start of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ti-" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public: Ed25519PublicKey) -> str:
    """Base64 of the SubjectPublicKeyInfo (the body of its PEM form)."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from base64 of its 32 raw bytes or of its SubjectPublicKeyInfo."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_der_public_key(data)
    except ValueError:
        raise ValueError("neither 32 raw key bytes nor a DER public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 public key")
    return key


def parse_public_keys(text: str, *, source: str) -> dict[str, Ed25519PublicKey]:
    """Trusted issuer keys by key id.

    Accepted, mixed freely: PEM blocks (`-----BEGIN PUBLIC KEY-----`, key id derived from
    the key) and entries `KID=BASE64` or a bare `BASE64` (raw key or DER; a bare key's id
    is derived), separated by new lines or commas. `#` starts a comment.
    """
    keys: dict[str, Ed25519PublicKey] = {}

    def add(kid: str, key: Ed25519PublicKey) -> None:
        if kid in keys and key_id(keys[kid]) != key_id(key):
            raise ValueError(f"{source}: key id {kid} is given twice with different keys")
        keys[kid] = key

    for block in _PEM.finditer(text):
        try:
            key = public_key_from_b64("".join(block.group(1).split()))
        except ValueError as exc:
            raise ValueError(f"{source}: a PEM public key is unusable: {exc}") from None
        add(key_id(key), key)
    for line in _PEM.sub("\n", text).splitlines():
        for entry in line.split("#", 1)[0].split(","):
            entry = entry.strip()
            if not entry:
                continue
            named = _NAMED.match(entry)
            if named is None and not _BARE.match(entry):
                raise ValueError(f"{source}: {entry[:24]!r}… is not KID=BASE64, BASE64 or PEM")
            try:
                key = public_key_from_b64(named.group(2) if named else entry)
            except ValueError as exc:
                raise ValueError(f"{source}: {entry[:24]!r}…: {exc}") from None
            add(named.group(1) if named else key_id(key), key)
    return keys


class TrustedKeys:
    """The issuer public keys this host trusts: a file, re-read whenever it changes (adding
    or retiring a key needs no restart), and fixed entries (MRB_TOKEN_PUBLIC_KEYS)."""

    def __init__(self, file: Path | None, fixed: str | None = None) -> None:
        self._file = file
        self._fixed = parse_public_keys(fixed, source="MRB_TOKEN_PUBLIC_KEYS") if fixed else {}
        self._stamp: tuple[int, int, int] | None = None
        self._from_file: dict[str, Ed25519PublicKey] = {}

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            st = os.stat(self._file)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self._from_file = {}
            return
        try:
            self._from_file = parse_public_keys(self._file.read_text(), source=str(self._file))
        except (OSError, ValueError) as exc:
            logger.error("token public keys not reloaded, the keys read before stay: %s", exc)

    def get(self, kid: str) -> Ed25519PublicKey | None:
        self._refresh()
        fixed, filed = self._fixed.get(kid), self._from_file.get(kid)
        if fixed is not None and filed is not None and key_id(fixed) != key_id(filed):
            logger.error("key id %s names different keys in the file and the environment", kid)
            return None
        return fixed or filed

    def key_ids(self) -> list[str]:
        self._refresh()
        return sorted({*self._fixed, *self._from_file})


class IssuerKey:
    """The token issuer's Ed25519 private key (PEM, PKCS#8) and its key id."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls) -> IssuerKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, *, source: str) -> IssuerKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{source} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def public_entry(self) -> str:
        """`KID=BASE64`, one line of a trusted-keys file or of MRB_TOKEN_PUBLIC_KEYS."""
        return f"{self.key_id}={public_key_b64(self.public)}"


def load_issuer_key(keys_dir: Path, *, create: bool) -> IssuerKey:
    """keys/token-issuer.key; created (and its public key trusted) only where `create`."""
    path = keys_dir / ISSUER_KEY_FILE
    if not path.exists():
        if not create:
            raise MissingKey(
                f"no token issuer key here ({path}): tokens are issued on the issuing host "
                "only (`mrb keys init` there); this host verifies them with public keys "
                f"({keys_dir / PUBLIC_KEYS_FILE} or MRB_TOKEN_PUBLIC_KEYS) and cannot issue"
            )
        new = IssuerKey.generate()
        if create_private_file(path, new.pem()):
            trust_public_key(keys_dir / PUBLIC_KEYS_FILE, new)
            return new
    key = IssuerKey.from_pem(path.read_bytes(), source=str(path))
    trust_public_key(keys_dir / PUBLIC_KEYS_FILE, key)  # a .pub lost or never copied
    return key


def trust_public_key(file: Path, key: IssuerKey) -> bool:
    """Add the key's public half to a trusted-keys file; False if it is there already."""
    text = file.read_text() if file.exists() else ""
    if key.key_id in parse_public_keys(text, source=str(file)):
        return False
    if not text:
        text = "# mrb token issuer public keys: KID=BASE64 per line (or PEM blocks)\n"
    added = datetime.now(UTC).strftime("%Y-%m-%d")
    text += ("" if text.endswith("\n") else "\n") + f"# added {added}\n{key.public_entry()}\n"
    replace_private_file(file, text)
    return True


def rotate_issuer_key(keys_dir: Path) -> tuple[IssuerKey, IssuerKey]:
    """A new issuer key replaces the old one; both public keys stay trusted here.

    Returns (old, new). Tokens the old key signed keep verifying until its public key is
    retired (`retire_public_key`) on every API host.
    """
    path = keys_dir / ISSUER_KEY_FILE
    if not path.exists():
        raise MissingKey(f"no token issuer key to rotate at {path}: run `mrb keys init`")
    old = IssuerKey.from_pem(path.read_bytes(), source=str(path))
    new = IssuerKey.generate()
    trust_public_key(keys_dir / PUBLIC_KEYS_FILE, old)
    trust_public_key(keys_dir / PUBLIC_KEYS_FILE, new)  # trusted before anything uses it
    replace_private_file(path, new.pem())
    return old, new


def retire_public_key(keys_dir: Path, kid: str) -> bool:
    """Stop trusting a key id here: tokens it signed are refused from the next request.

    Refuses to retire the key this host issues with (its tokens would all be refused).
    """
    file = keys_dir / PUBLIC_KEYS_FILE
    issuer = keys_dir / ISSUER_KEY_FILE
    if (
        issuer.exists()
        and IssuerKey.from_pem(issuer.read_bytes(), source=str(issuer)).key_id == kid
    ):
        raise ValueError(f"{kid} is the key this host issues with: rotate first")
    keys = parse_public_keys(file.read_text(), source=str(file)) if file.exists() else {}
    if kid not in keys:
        return False
    del keys[kid]
    lines = ["# mrb token issuer public keys: KID=BASE64 per line (or PEM blocks)"]
    lines += [f"{k}={public_key_b64(v)}" for k, v in sorted(keys.items())]
    replace_private_file(file, "\n".join(lines) + "\n")
    return True


# --- issuing and verifying --------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    subject: str
    role: Role
    hospital: str
    kind: TokenKind
    key_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class VerifiedToken:
    actor: Actor  # actor.token_id is the jti
    kind: TokenKind
    key_id: str
    issued_at: datetime
    expires_at: datetime


def _actor(subject: str, role: Role, hospital: str, jti: str | None = None) -> Actor:
    return Actor(subject, role, hospital, token_id=jti)


class TokenIssuer:
    """Signs tokens; only where keys/token-issuer.key is (the issuing host)."""

    def __init__(self, key: IssuerKey, lifetimes: Lifetimes) -> None:
        self.key = key
        self.lifetimes = lifetimes

    def issue(
        self,
        subject: str,
        role: Role,
        hospital: str,
        *,
        ttl: timedelta | None = None,
        machine: bool = False,
        now: datetime | None = None,
    ) -> IssuedToken:
        """A signed token; ValueError for a missing subject, a role that does not fit the
        hospital, or a lifetime over the cap for its kind (the default is the cap)."""
        subject = subject.strip()
        if not subject:
            raise ValueError("a token needs a subject: the person or system that holds it")
        if len(subject) > _MAX_SUBJECT:
            raise ValueError(f"the subject is longer than {_MAX_SUBJECT} characters")
        _actor(subject, role, hospital)  # role and hospital fit together
        kind = kind_for(role, machine)
        cap = self.lifetimes.cap(kind)
        life = cap if ttl is None else ttl
        if life <= timedelta(0):
            raise ValueError("a token's lifetime must be positive")
        if life > cap:
            setting = "MRB_TOKEN_MAX_TTL_" + ("MACHINES" if kind is TokenKind.MACHINE else "PEOPLE")
            raise ValueError(
                f"a {kind.value} token lives at most {describe(cap)} ({setting}); "
                f"{describe(life)} was asked"
            )
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + life
        jti = str(uuid.uuid4())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "role": role.value,
            "hospital": hospital,
            "kind": kind.value,
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": jti,
        }
        token = jwt.encode(
            claims, self.key.private, algorithm=ALGORITHM, headers={"kid": self.key.key_id}
        )
        return IssuedToken(
            token, jti, subject, role, hospital, kind, self.key.key_id, issued, expires
        )


class TokenVerifier:
    """Checks a token with trusted public keys only; knows nothing of any private key."""

    # Tokens already verified, until they expire: the same token comes with every request
    # of a session (and the rate limiter identifies the caller before the route does), and a
    # signature check is most of the cost. Revocation is not cached here: the API consults
    # the register on every request (broker/api/deps.py).
    CACHE_SIZE = 10_000

    def __init__(self, keys: TrustedKeys, lifetimes: Lifetimes) -> None:
        self.keys = keys
        self.lifetimes = lifetimes
        self._verified: OrderedDict[str, tuple[VerifiedToken, Ed25519PublicKey]] = OrderedDict()

    def verify(self, token: str, *, now: datetime | None = None) -> VerifiedToken:
        """The token's caller; InvalidToken names what is wrong with it."""
        cached = self._verified.get(token)
        if cached is not None:
            verified, public = cached
            # Still trusted under the same key (a retired or reloaded key: verify again),
            # and not expired (the leeway a fresh verification allows).
            if (now or datetime.now(UTC)) < verified.expires_at + CLOCK_SKEW and (
                self.keys.get(verified.key_id) is public
            ):
                self._verified.move_to_end(token)
                return verified
            del self._verified[token]
        verified = self._verify(token)
        if (key := self.keys.get(verified.key_id)) is not None:
            self._verified[token] = (verified, key)
            if len(self._verified) > self.CACHE_SIZE:
                self._verified.popitem(last=False)
        return verified

    def _verify(self, token: str) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a JWT") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise InvalidToken(f"tokens are signed with {ALGORITHM}; {str(alg)[:20]!r} is refused")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        public = self.keys.get(kid)
        if public is None:
            raise InvalidToken(f"the token is signed by key {kid[:64]!r}, which is not trusted")
        try:
            claims = jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; ask for a new one") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        try:
            role = Role(str(claims.get("role")))
            kind = TokenKind(str(claims.get("kind")))
        except ValueError:
            raise InvalidToken("the token's role or kind is unknown") from None
        issued_at = _instant(claims["iat"])
        expires_at = _instant(claims["exp"])
        cap = self.lifetimes.cap(kind)
        if expires_at - issued_at > cap:
            raise InvalidToken(
                f"the token lives {describe(expires_at - issued_at)}, longer than the "
                f"{describe(cap)} allowed for a {kind.value} token"
            )
        hospital, jti = claims.get("hospital"), claims["jti"]
        if not isinstance(hospital, str) or not isinstance(jti, str) or not jti:
            raise InvalidToken("the token names no hospital or no token id")
        try:
            if kind_for(role, kind is TokenKind.MACHINE) is not kind:
                raise ValueError("an adapter token is a machine's")
            actor = _actor(str(claims["sub"]), role, hospital, jti)
        except ValueError as exc:
            raise InvalidToken(f"the token's claims do not fit together: {exc}") from None
        return VerifiedToken(actor, kind, kid, issued_at, expires_at)


def _instant(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken("the token's times are not numbers")
    return datetime.fromtimestamp(value, UTC)


def describe(span: timedelta) -> str:
    """8 h, 30 d, 90 min, 45 s: a lifetime as people read it."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def parse_ttl(text: str) -> timedelta:
    """`90s`, `30m`, `8h`, `7d` (also `1.5h`) as a lifetime; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*", text.lower())
    if match is None:
        raise ValueError(f"lifetime {text!r}: give a number and s, m, h or d, e.g. 8h or 30d")
    value, unit = float(match.group(1)), match.group(2)
    size = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[unit]
    return timedelta(seconds=value * size)


def actor_hospital(role: Role, hospital: str | None) -> str:
    """A token's hospital: '*' for a platform role (which may omit it), else the one given."""
    if role.platform:
        if hospital not in (None, ALL_HOSPITALS):
            raise ValueError(f"{role.value} is a platform role: it acts for every hospital ('*')")
        return ALL_HOSPITALS
    if not hospital or hospital == ALL_HOSPITALS:
        raise ValueError(f"{role.value} is a hospital role: name its one hospital (--hospital)")
    return hospital
