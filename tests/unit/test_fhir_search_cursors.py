"""Paging cursors: signed, opaque, bound to the user and the resource type, expiring."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from broker.api.routes.fhir import FhirEdgeError, refusal_outcome
from broker.domain.actors import Actor, Role
from broker.domain.errors import Refused
from broker.fhir.cursors import CursorSigner, Page

KEY = bytes(range(32))
NOW = datetime(2026, 6, 1, 9, tzinfo=UTC)
LI = Actor("dr.li", Role.DOCTOR, "H002")
PAGE = Page("Observation", (("patient", "Patient/p1"), ("code", "718-7")), 20, 10)


def refused(
    cursor: str, actor: Actor = LI, rtype: str = "Observation", now: datetime = NOW
) -> FhirEdgeError:
    with pytest.raises(Refused) as caught:
        CursorSigner(KEY).open(cursor, rtype, actor, now)
    return refusal_outcome(caught.value)  # as the FHIR edge answers it


def test_a_cursor_round_trips_for_its_user() -> None:
    signer = CursorSigner(KEY)
    cursor = signer.issue(PAGE, LI, NOW)
    assert signer.open(cursor, "Observation", LI, NOW + timedelta(minutes=59)) == PAGE
    # Safe in a URL as it is.
    assert all(c.isalnum() or c in "-_." for c in cursor)


def test_another_user_is_refused_with_403() -> None:
    cursor = CursorSigner(KEY).issue(PAGE, LI, NOW)
    for other in (
        Actor("dr.wang", Role.DOCTOR, "H002"),
        Actor("dr.li", Role.DOCTOR, "H001"),  # same name at another hospital
        Actor("dr.li", Role.ADMIN, "H002"),
    ):
        err = refused(cursor, other)
        assert err.status == 403 and "another user" in err.diagnostics


def test_an_altered_cursor_is_refused() -> None:
    cursor = CursorSigner(KEY).issue(PAGE, LI, NOW)
    payload, mac = cursor.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["o"] = 0  # jump elsewhere
    body["q"][0][1] = "Patient/someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    err = refused(f"{forged}.{mac}")
    assert err.status == 400 and "signature" in err.diagnostics
    flipped = "B" if cursor[-5] != "B" else "C"
    assert refused(cursor[:-5] + flipped + cursor[-4:]).status == 400
    assert refused("not-a-cursor").status == 400
    assert refused("").status == 400


def test_a_cursor_from_another_key_is_refused() -> None:
    cursor = CursorSigner(bytes(32)).issue(PAGE, LI, NOW)
    assert "signature" in refused(cursor).diagnostics


def test_a_cursor_expires() -> None:
    cursor = CursorSigner(KEY, ttl=timedelta(minutes=5)).issue(PAGE, LI, NOW)
    assert "expired" in refused(cursor, now=NOW + timedelta(minutes=6)).diagnostics


def test_a_cursor_pages_only_its_resource_type() -> None:
    cursor = CursorSigner(KEY).issue(PAGE, LI, NOW)
    assert "Observation search" in refused(cursor, rtype="DiagnosticReport").diagnostics


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CursorSigner(b"short")
