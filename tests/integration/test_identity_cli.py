"""`mrb patient review|link|unlink` (broker/cli/patient_cmd.py) against SQLite and
PostgreSQL: listing the queue, deciding, linking by person id and by SYSTEM|VALUE,
unlinking, and refusals that name the cause and exit non-zero (the same use cases over
HTTP: tests/integration/test_identity_api.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from broker.bootstrap import Container
from broker.cli.main import app
from broker.storage.identity_tables import identity_link, identity_review
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import certify
from tests.integration.test_identity_review import MRN, index, patient

OPERATOR = "ops.wang"


@pytest.fixture
async def queued(container: Container) -> Container:
    """One open review item: H001's 张晓明 (MRN-1) and H002's 张晓鸣 (MRN-77)."""
    await certify(container)
    await index(container, f.lab_bundle(pat=patient("MRN-1")), "H001")
    await index(container, f.lab_bundle(accession="ACC-77", pat=patient("MRN-77", "晓鸣")), "H002")
    return container


def env_of(c: Container) -> dict[str, str]:
    s = c.settings
    return {
        "MRB_DATA_DIR": str(s.data_dir),
        "MRB_DATABASE_URL": s.database_url or "",
        "MRB_DATABASE_SCHEMA": s.database_schema or "",
        "MRB_OPERATOR": OPERATOR,
        "COLUMNS": "400",  # rich folds table cells to the terminal width
    }


async def mrb(c: Container, *args: str, code: int = 0) -> Result:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["patient", *args], env=env_of(c))
    assert result.exit_code == code, result.output
    return result


async def reviews(c: Container) -> list[Any]:
    async with c.sessions() as s:
        return list((await s.execute(select(identity_review))).all())


async def changes(c: Container) -> list[Any]:
    async with c.sessions() as s:
        found = await s.execute(
            select(audit_event)
            .where(audit_event.c.action.like("identity%"))
            .order_by(audit_event.c.id)
        )
        return list(found.all())


async def test_list_confirm_and_unlink_by_identifier(queued: Container) -> None:
    c = queued
    (item,) = await reviews(c)
    listed = await mrb(c, "review")
    assert item.id in listed.stdout and "POSSIBLE_MATCH" in listed.stdout
    assert item.person_id in listed.stdout and item.candidate_id in listed.stdout
    assert "name=homophone" in listed.stdout and "open" in listed.stdout
    assert "张" not in listed.stdout  # levels and weights, never demographics

    confirmed = await mrb(c, "review", "--decide", item.id, "confirm")
    (link,) = await rows_of_links(c)
    assert f"review {item.id}: confirmed (link {link.id})" in confirmed.stdout
    empty = await mrb(c, "review")
    assert "no review items" in empty.stdout and item.id not in empty.stdout
    every = await mrb(c, "review", "--all")
    assert item.id in every.stdout and "confirmed" in every.stdout

    # Deciding again: the cause and what to do instead, exit 2, nothing changed.
    again = await mrb(c, "review", "--decide", item.id, "reject", code=2)
    assert "Review item already decided" in again.output and "unlink" in again.output
    assert [r.status for r in await reviews(c)] == ["confirmed"]
    unknown = await mrb(c, "review", "--decide", "no-such-item", "confirm", code=2)
    assert "Unknown review item" in unknown.output
    bad = await mrb(c, "review", "--decide", item.id, "maybe", code=2)
    assert "confirm|reject" in bad.output

    unlinked = await mrb(c, "unlink", f"{MRN}|MRN-77", "--hospital", "H002")
    assert f"unlinked {item.person_id} from {item.candidate_id} (link {link.id})" in unlinked.stdout
    assert "recognitions undone: 0" in unlinked.stdout
    (ended,) = await rows_of_links(c)
    assert ended.end_reason == "unlinked" and ended.ended_by == OPERATOR
    twice = await mrb(c, "unlink", f"{MRN}|MRN-77", "--hospital", "H002", code=2)
    assert "Not linked" in twice.output

    trail = [(e.action, e.actor) for e in await changes(c) if e.action.startswith("identity.")]
    assert trail == [("identity.review.confirm", OPERATOR), ("identity.unlink", OPERATOR)]


async def test_link_by_identifiers_of_two_hospitals_and_by_person_id(queued: Container) -> None:
    c = queued
    (item,) = await reviews(c)
    await mrb(c, "review", "--decide", item.id, "reject", "--by", "sys.zhang")

    made = await mrb(
        c,
        "link",
        f"{MRN}|MRN-1",
        f"{MRN}|MRN-77",
        "--into-hospital",
        "H001",
        "--hospital",
        "H002",
    )
    (link,) = await rows_of_links(c)
    assert f"linked {item.person_id} into {item.candidate_id} (link {link.id})" in made.stdout
    same = await mrb(c, "link", item.candidate_id, item.person_id, code=2)
    assert "Already one person" in same.output

    # Given the survivor of exactly one link, unlink undoes that link.
    done = await mrb(c, "unlink", item.candidate_id)
    assert f"(link {link.id})" in done.stdout
    relinked = await mrb(c, "link", item.candidate_id, item.person_id)
    assert f"linked {item.person_id} into {item.candidate_id}" in relinked.stdout

    trail = [(e.action, e.actor) for e in await changes(c) if e.action.startswith("identity.")]
    assert trail == [
        ("identity.review.reject", "sys.zhang"),
        ("identity.link", OPERATOR),
        ("identity.unlink", OPERATOR),
        ("identity.link", OPERATOR),
    ]


async def test_unknown_people_and_malformed_names_are_refused(queued: Container) -> None:
    c = queued
    (item,) = await reviews(c)
    nobody = await mrb(c, "link", item.candidate_id, "no-such-person", code=2)
    assert "Unknown person" in nobody.output and "no-such-person" in nobody.output
    stranger = await mrb(
        c, "link", item.candidate_id, f"{MRN}|MRN-404", "--hospital", "H001", code=2
    )
    assert "Unknown patient" in stranger.output
    assert "MRN-404" not in stranger.output  # an identifier's value is never echoed
    # An MRN without its hospital names nobody, and says what is missing.
    bare = await mrb(c, "unlink", f"{MRN}|MRN-77", code=2)
    assert "needs its hospital" in bare.output
    malformed = await mrb(c, "unlink", "|MRN-77", code=2)
    assert "SYSTEM|VALUE" in malformed.output
    not_linked = await mrb(c, "unlink", item.person_id, code=2)
    assert "Not linked" in not_linked.output
    assert await rows_of_links(c) == []
    assert [e.action for e in await changes(c) if e.action.startswith("identity.")] == []


async def rows_of_links(c: Container) -> list[Any]:
    async with c.sessions() as s:
        return list((await s.execute(select(identity_link))).all())
