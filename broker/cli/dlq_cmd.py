"""`mrb dlq list|replay|purge`: what was rejected and why; re-submit after a fix.

Dead letters are read from the broker's database, where the worker keeps each rejected
message (its value sealed) beyond Kafka retention; the copy on mrb.results.dlq.v1 is
written as before. Replay marks what it sends in the same transaction, so a second run
sends nothing new (`--again` forces it). See docs/operations.md, "Dead letters".
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.exceptions import InvalidTag
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.bootstrap import Container
from broker.cli.adapter_cmd import bootstrap_of
from broker.cli.context import BY_HELP, operator, with_container
from broker.domain.actors import Role
from broker.kafka.topics import RESULTS
from broker.settings import Settings
from broker.storage import dead_letters
from broker.storage.audit_log import record_change
from broker.storage.dead_letters import DeadLetter, Replay, Status

app = typer.Typer(
    help="Dead letters: rejected messages kept in the broker's database (and on "
    "mrb.results.dlq.v1); list, replay after a fix, purge old values.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True, highlight=False)

Code = Annotated[str | None, typer.Option(help="Only this error code.")]
Hospital = Annotated[str | None, typer.Option(help="Only this hospital.")]
By = Annotated[str | None, typer.Option(help=BY_HELP)]


@app.command("list")
def dlq_list(
    code: Code = None,
    hospital: Hospital = None,
    status: Annotated[
        Status | None,
        typer.Option(help="Only this status: open, replayed, resolved (indexed since), purged."),
    ] = None,
) -> None:
    """List dead letters: id, status, hospital, message id, error code, dates and detail
    (never the value)."""

    async def work(c: Container) -> list[DeadLetter]:
        async with c.sessions() as s:
            return await dead_letters.listing(
                s, code=code, hospital=hospital, status=status.value if status else None
            )

    letters = with_container(work)
    table = Table(
        "id", "status", "hospital", "message id", "code", "rejected", "replayed", "detail"
    )
    for d in letters:
        replayed = f"{d.replayed_at:%Y-%m-%d %H:%M} by {d.replayed_by}" if d.replayed_at else ""
        table.add_row(
            str(d.id),
            d.status + ("" if d.stored or d.status == Status.PURGED else " (no value)"),
            d.hospital or "",
            d.message_id or "",
            d.code,
            f"{d.rejected_at:%Y-%m-%d %H:%M}",
            replayed,
            escape(d.detail[:120]),
        )
    if letters:
        console.print(table)
    counts = Counter(d.status for d in letters)
    codes = Counter(d.code for d in letters)
    console.print(
        ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        + " (by code: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
        + ")"
        if letters
        else "no dead letters"
    )


@app.command("replay")
def dlq_replay(
    code: Code = None,
    hospital: Hospital = None,
    ids: Annotated[
        list[int] | None,
        typer.Option("--id", help="Only this dead letter (its id in `mrb dlq list`); repeat."),
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Also send those replayed before (not resolved).")
    ] = False,
    by: By = None,
) -> None:
    """Re-submit open dead letters to mrb.results.v1 (original value, key and headers) and
    mark them replayed in the same step: a second run sends nothing new.

    Values are sealed with the broker's payload key, so replay runs where the broker's
    MRB_DATA_DIR/keys are. A replayed message that is then indexed becomes resolved, and
    its adapter's next receipt check turns its rejection into a delivery.
    """
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> tuple[int, int]:
        now = datetime.now(UTC)
        async with c.sessions() as s, s.begin():
            try:
                claimed = await dead_letters.claim_for_replay(
                    s,
                    c.cipher,
                    by=actor.name,
                    now=now,
                    ids=ids or (),
                    code=code,
                    hospital=hospital,
                    again=again,
                )
            except (InvalidTag, KeyError) as exc:
                raise ValueError(
                    f"a dead letter's value does not open with the payload keys in "
                    f"{c.settings.keys_dir} ({type(exc).__name__}): nothing was sent"
                ) from None
            if not claimed:
                replayed = await dead_letters.listing(
                    s, code=code, hospital=hospital, status=Status.REPLAYED.value
                )
                return 0, sum(1 for d in replayed if not ids or d.id in ids)
            await _send(c.settings, claimed)  # before the commit: a failed send marks nothing
            await record_change(
                s,
                actor,
                action="dlq.replay",
                hospital=hospital,
                detail={
                    "ids": [r.id for r in claimed],
                    "message_ids": [r.message_id for r in claimed],
                    "code": code,
                    "again": again,
                },
            )
        return len(claimed), 0

    try:
        sent, replayed_before = with_container(work)
    except (KafkaError, OSError) as exc:
        err.print(f"[red]error:[/red] cannot send to Kafka ({exc!r}): nothing was marked replayed")
        raise typer.Exit(1) from None
    if not sent:
        hint = (
            f" ({replayed_before} replayed before: --again sends them again)"
            if replayed_before
            else ""
        )
        console.print(f"nothing to replay{hint}")
        return
    console.print(f"replayed {sent} message(s) to {RESULTS}")


async def _send(settings: Settings, letters: list[Replay]) -> None:
    producer = AIOKafkaProducer(
        **settings.kafka_options(),
        bootstrap_servers=bootstrap_of(settings),
        acks="all",
        enable_idempotence=False,
        max_request_size=32 * 1024 * 1024,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(RESULTS, value=r.value, key=r.key, headers=r.headers)
            for r in letters
        ]
        for fut in futures:
            await fut
    finally:
        await producer.stop()


@app.command("purge")
def dlq_purge(
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than",
            min=0,
            metavar="DAYS",
            help="Dead letters rejected more than DAYS ago (default MRB_DLQ_RETENTION_DAYS, 90).",
        ),
    ] = None,
    by: By = None,
) -> None:
    """Delete the stored values (sealed message, headers, key) of old dead letters; their
    rows stay with code, detail and dates for reports. Audited (dlq.purge)."""
    actor = operator(Role.PLATFORM_ADMIN, by)

    async def work(c: Container) -> tuple[int, int]:
        days = c.settings.dlq_retention_days if older_than is None else older_than
        now = datetime.now(UTC)
        before = now - timedelta(days=days)
        async with c.sessions() as s, s.begin():
            n = await dead_letters.purge(s, before=before, now=now)
            await record_change(
                s,
                actor,
                action="dlq.purge",
                hospital=None,
                detail={"older_than_days": days, "before": before.isoformat(), "purged": n},
            )
        return days, n

    days, n = with_container(work)
    console.print(
        f"purged the stored values of {n} dead letter(s) rejected more than {days} day(s) "
        "ago; their rows stay"
    )
