"""Correlation ids of the work in hand, bound to the current context (structlog
contextvars): every log line written meanwhile carries them (broker.observability), and
the audit entries a request writes store its request id (broker/storage/audit_log.py).

Ids come from callers (`X-Request-ID`, a CDS call's `hookInstance`), so only short,
plain ones are kept: anything else could smuggle text (an identifier) into the logs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

REQUEST_ID = "request_id"
HOOK_INSTANCE = "hook_instance"
_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A resident ID (15 or 18 digits), a mobile number (11), many MRNs and card numbers. A
# UUID never has more than 12 digits in a row, so real correlation ids pass.
_LONG_NUMBER = re.compile(r"\d{11}")


def safe_id(value: str | None) -> str | None:
    """`value` when it is 1-128 letters, digits or `._:-` with no 11 digits in a row (it
    could be an identifier a caller put there); else None."""
    if value is None or not _SAFE.fullmatch(value) or _LONG_NUMBER.search(value):
        return None
    return value


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Bind `request_id` for the request; on exit the context is as it was before, with
    anything bound meanwhile (a hook instance) gone too."""
    before = structlog.contextvars.get_contextvars()
    structlog.contextvars.bind_contextvars(**{REQUEST_ID: request_id})
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**before)


def bind_hook_instance(hook_instance: str) -> None:
    """A CDS Hooks call's `hookInstance` (the EHR's id for it), when it is a plain id."""
    safe = safe_id(hook_instance)
    if safe is not None:
        structlog.contextvars.bind_contextvars(**{HOOK_INSTANCE: safe})


def current_request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get(REQUEST_ID)
    return value if isinstance(value, str) else None
