"""Rate limits shared by every API process (docs/security.md, "Rate limits, CDS servers
and the poller").

Three limits, each off when set to 0:

- requests per minute per token: one person, named by the token's subject and hospital
  (`MRB_RATE_LIMIT_PER_MINUTE`);
- requests per minute per client address (`MRB_RATE_LIMIT_PER_ADDRESS_PER_MINUTE`);
- distinct patients one person looks up per hour (`MRB_DISTINCT_PATIENTS_PER_HOUR`):
  looking the same patient up again does not count again.

The request limits use the `limits` library's sliding-window-counter strategy over one
of two storages, so every API process counts against the same numbers: limits' own Redis
storage when `MRB_REDIS_URL` is set, else `DatabaseStorage` (broker/storage/rate_limits.py:
one transaction per hit, atomic upserts on SQLite and PostgreSQL). The distinct-patient
counter is a set per person of (patient pseudonym, last looked up): a table, or a Redis
sorted set changed by one Lua script. It never holds an identifier, only the HMAC
pseudonym (or mrb's own person id for searches by `Patient/{id}`).

A limiter that cannot reach its storage lets the request through (logged, counted in
`mrb_rate_limit_errors_total` and alerted on): rate limits must not stop patient care.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from broker.domain.actors import Actor
from broker.domain.errors import TooManyRequests
from broker.observability import BREAK_GLASS, RATE_LIMIT_ERRORS, RATE_LIMITED
from broker.ports.audit_trail import ReadAudit
from broker.storage.database import Engine
from broker.storage.rate_limits import DatabasePatientCounter, DatabaseStorage

logger = logging.getLogger(__name__)

PATIENT_WINDOW_SECONDS = 3600
KEY_PREFIX = "mrb"
_MAX_KEY = 200  # longer names (a subject, an address) are hashed to fit the tables
_MAX_PATIENT = 72  # a pseudonym is 64 hex digits; anything longer is hashed


@dataclass(frozen=True)
class Refusal:
    """Why a request is over a limit, and when to try again (whole seconds, >= 1)."""

    limit: str  # "token", "address" or "patients"
    retry_after: int
    detail: str


class RateLimited(TooManyRequests):
    """The caller is over a limit (the API adds Retry-After)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__("Too Many Requests", refusal.detail, refusal.retry_after)
        self.refusal = refusal


@dataclass
class Throttle:
    """What the rate limits decided for the request being served (set by the API edge).

    `deferred`: a request limit the edge did not enforce itself, because the route may
    serve an emergency (it decides once it has read the request). `refused`: the refusal
    the response carries, for its Retry-After header.
    """

    deferred: Refusal | None = None
    refused: Refusal | None = None


# Set per request by the API edge (broker/api/limits.py); None outside a request.
THROTTLE: ContextVar[Throttle | None] = ContextVar("mrb_throttle", default=None)


def note_refusal(refusal: Refusal) -> None:
    """Remember the refusal of this request, so its 429 carries Retry-After."""
    throttle = THROTTLE.get()
    if throttle is not None:
        throttle.refused = refusal


def _name(*parts: str) -> str:
    """A key part that fits the tables: as given when short, else its SHA-256."""
    joined = "/".join(parts)
    if len(joined) <= _MAX_KEY:
        return joined
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()


# -- distinct patients per person --------------------------------------------------------


class PatientCounter(Protocol):
    async def look_up(self, person: str, patient: str, limit: int, window: int) -> float | None:
        """Record that `person` looks `patient` up now: None when admitted (a patient
        already in the window always is), else seconds until a patient leaves it."""
        ...

    async def close(self) -> None: ...


# KEYS[1]: the person's sorted set (patient -> time last looked up);
# ARGV: patient, limit, window in seconds. Returns "0" when admitted, else the seconds
# until the oldest patient leaves the window. Redis' own clock, so processes agree.
_LOOK_UP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(window))
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(math.max(0.001, tonumber(oldest[2]) + window - now))
"""


class RedisPatientCounter:
    """The person's patients as a Redis sorted set, changed atomically by one Lua script."""

    def __init__(self, url: str) -> None:
        import coredis

        self._client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
        self._script = self._client.register_script(_LOOK_UP)

    async def look_up(self, person: str, patient: str, limit: int, window: int) -> float | None:
        key = f"{KEY_PREFIX}:patients:{{{person}}}"
        answer = await self._script(keys=[key], args=[patient, limit, window])
        wait = float(str(answer))
        return None if wait == 0 else wait

    async def close(self) -> None:
        self._client.connection_pool.disconnect()


# -- the limiter ---------------------------------------------------------------------------


class RateLimiter:
    """The three limits over shared storage; each check returns a Refusal or None."""

    def __init__(
        self,
        storage: Storage,
        patients: PatientCounter,
        *,
        per_token: int,
        per_address: int,
        patients_per_hour: int,
        patient_window: int = PATIENT_WINDOW_SECONDS,
    ) -> None:
        self.storage = storage
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self._per_token = RateLimitItemPerMinute(per_token) if per_token else None
        self._per_address = RateLimitItemPerMinute(per_address) if per_address else None
        self._patients = patients
        self._patients_limit = patients_per_hour
        self._patient_window = patient_window

    @classmethod
    def build(
        cls,
        engine: Engine,
        *,
        redis_url: str | None,
        per_token: int,
        per_address: int,
        patients_per_hour: int,
    ) -> RateLimiter:
        """Redis when a URL is given, else the database behind `engine`."""
        storage: Storage
        patients: PatientCounter
        if redis_url:
            from limits.aio.storage import RedisStorage

            scheme = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            storage = RedisStorage(scheme, key_prefix=KEY_PREFIX)
            patients = RedisPatientCounter(redis_url.removeprefix("async+"))
        else:
            storage = DatabaseStorage(engine)
            patients = DatabasePatientCounter(engine)
        return cls(
            storage,
            patients,
            per_token=per_token,
            per_address=per_address,
            patients_per_hour=patients_per_hour,
        )

    async def token(self, person: str) -> Refusal | None:
        """One request by `person` (hospital/subject of a token, or a CDS user)."""
        if self._per_token is None:
            return None
        return await self._hit(
            self._per_token,
            "token",
            person,
            f"more than {self._per_token.amount} requests a minute with this token "
            "(MRB_RATE_LIMIT_PER_MINUTE); wait and send again",
        )

    async def address(self, address: str) -> Refusal | None:
        """One request from a client address."""
        if self._per_address is None:
            return None
        return await self._hit(
            self._per_address,
            "address",
            address,
            f"more than {self._per_address.amount} requests a minute from this address "
            "(MRB_RATE_LIMIT_PER_ADDRESS_PER_MINUTE); wait and send again",
        )

    async def patient(self, person: str, patient: str) -> Refusal | None:
        """`person` looks `patient` (a pseudonym) up: a new one counts, a repeat does not."""
        if not self._patients_limit:
            return None
        if len(patient) > _MAX_PATIENT:
            patient = "sha256:" + hashlib.sha256(patient.encode()).hexdigest()
        try:
            wait = await self._patients.look_up(
                _name(person), patient, self._patients_limit, self._patient_window
            )
        except Exception as exc:  # the storage is down: let care go on, and say so
            return self._failed("patients", exc)
        if wait is None:
            return None
        return self._refuse(
            "patients",
            wait,
            f"more than {self._patients_limit} different patients looked up in an hour "
            "(MRB_DISTINCT_PATIENTS_PER_HOUR); patients already looked up stay available. "
            'In an emergency send "emergency": true: the check is then recorded as '
            "break-glass",
        )

    async def close(self) -> None:
        await self._patients.close()

    async def _hit(self, item: RateLimitItem, kind: str, who: str, detail: str) -> Refusal | None:
        name = _name(who)
        try:
            if await self._strategy.hit(item, KEY_PREFIX, kind, name):
                return None
            stats = await self._strategy.get_window_stats(item, KEY_PREFIX, kind, name)
        except Exception as exc:
            return self._failed(kind, exc)
        return self._refuse(kind, stats.reset_time - time.time(), detail)

    @staticmethod
    def _refuse(kind: str, wait: float, detail: str) -> Refusal:
        RATE_LIMITED.labels(kind).inc()
        return Refusal(kind, max(1, math.ceil(wait)), detail)

    @staticmethod
    def _failed(kind: str, exc: Exception) -> None:
        RATE_LIMIT_ERRORS.labels(kind).inc()
        logger.error("rate limit %s not checked (storage unavailable): %s", kind, exc)
        return None


# -- admitting a request that names a patient ---------------------------------------------


async def admit(
    limiter: RateLimiter,
    audit: ReadAudit,
    actor: Actor,
    *,
    patients: Sequence[str],
    emergency: bool,
    channel: str,
    per_person_requests: bool = False,
) -> None:
    """Let `actor` look up `patients` (pseudonyms), or raise RateLimited (429).

    Counted here: a request limit the API edge deferred to this route, the person's
    request limit when `per_person_requests` (CDS users, whom the edge cannot name), and
    each patient against the distinct-patient limit. An emergency is never refused: it
    passes, is audited as break-glass and counted in `mrb_break_glass_total`.
    """
    throttle = THROTTLE.get()
    person = f"{actor.hospital}/{actor.name}"
    refusal = throttle.deferred if throttle is not None else None
    if refusal is None and per_person_requests:
        refusal = await limiter.token(person)
    for patient in patients:
        if refusal is not None:
            break
        refusal = await limiter.patient(person, patient)
    if refusal is None:
        return
    if emergency:
        await break_glass(audit, actor, refusal, channel=channel, patients=patients)
        return
    note_refusal(refusal)
    raise RateLimited(refusal)


def refuse_deferred() -> None:
    """Raise RateLimited for a request limit the edge deferred, on a path that turned out
    not to look anybody up (and so cannot be an emergency)."""
    throttle = THROTTLE.get()
    if throttle is not None and throttle.deferred is not None:
        note_refusal(throttle.deferred)
        raise RateLimited(throttle.deferred)


async def break_glass(
    audit: ReadAudit,
    actor: Actor,
    refusal: Refusal,
    *,
    channel: str,
    patients: Sequence[str],
) -> None:
    """An emergency over a limit: let it through, audit it, count it for the alert."""
    BREAK_GLASS.labels(channel, refusal.limit).inc()
    logger.warning(
        "break-glass: %s/%s over the %s limit in an emergency (%s)",
        actor.hospital,
        actor.name,
        refusal.limit,
        channel,
    )
    await audit.record(
        actor,
        action="rate-limit-break-glass",
        purpose="break-glass",
        patient_pseudonym=patients[0] if patients else None,
        detail={"limit": refusal.limit, "channel": channel, "patients": len(patients)},
    )
