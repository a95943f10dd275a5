"""How many statements and connection checkouts one CDS Hooks order-select call costs.

Each statement is a round trip, each checkout a connection taken from the pool: this pins
them (as tests/integration/test_check_round_trips.py pins the check's), so that a read
added to the call, or a unit of work opened again, shows up here first. 22 statements and
10 checkouts on PostgreSQL before the call was folded (2026-12-04), 16 and 9 after
(a patient looked up again within the hour is one statement of the distinct-patient limit),
15 once the check read the person with their items.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from tests.integration.test_cds_hooks import (  # noqa: F401 (fixtures by name)
    SELECT,
    Ehr,
    ehr,
    hook_request,
    lab_order,
    settings,
)


def _verb_and_table(statement: str) -> str:
    words = statement.split()
    if words[0] == "WITH":  # PostgreSQL's one-statement write of check, event and audit
        return "WRITE check+event+audit"
    table = {"SELECT": None, "INSERT": 2, "DELETE": 2, "UPDATE": 1}[words[0]]
    if table is None:  # named by its first column's table, or the function it calls
        return f"SELECT {words[1].split('.')[0].split('(')[0]}"
    return f"{words[0]} {words[table]}"


async def test_an_order_select_call_reads_and_writes_once_each(ehr: Ehr) -> None:  # noqa: F811
    sent: list[str] = []
    checkouts: list[int] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(_verb_and_table(statement))

    def checkout(*_: Any) -> None:
        checkouts.append(1)

    engine = ehr.container.engine.sync_engine
    first = hook_request("order-select", lab_order("hgb-1"), selections=["ServiceRequest/hgb-1"])
    await ehr.cards(SELECT, first)  # caches warm, the patient counted once
    body = hook_request("order-select", lab_order("hgb-2"), selections=["ServiceRequest/hgb-2"])
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", checkout)
    try:
        (card,) = await ehr.cards(SELECT, body)
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", checkout)
    assert "RECOGNIZABLE" in card["detail"]
    postgres = engine.dialect.name == "postgresql"
    check_write = (
        ["WRITE check+event+audit"]
        if postgres
        else ["INSERT recognition_check", "INSERT event_outbox", "INSERT audit_event"]
    )
    assert sent == [
        "INSERT rate_limit_counter",  # the request's limit: one statement a hit
        "SELECT cds_client",  # the EHR's JWT
        "DELETE cds_jti",
        "INSERT cds_jti",
        "SELECT reference_stamp",  # the catalog, for the draft orders
        "INSERT rate_limit_counter",  # the doctor's limit
        # The same patient again, already counted: PostgreSQL's function (migration 0026),
        # SQLite's UPDATE.
        "SELECT mrb_patient_look_up" if postgres else "UPDATE rate_limit_patient",
        # One unit of work: the person (with whether they have consent records: none, so
        # none are read), the draft orders checked before.
        "SELECT person",
        "SELECT cds_draft_order",
        # The check: the person with the reference stamps and their items, one write.
        "SELECT stamps",
        *check_write,
        # The card: hospital names and result states; the draft remembered in one upsert.
        "SELECT reference_stamp",
        "SELECT result",
        "INSERT cds_draft_order",
        "INSERT cds_card",
    ], sent
    assert len(checkouts) == 9
