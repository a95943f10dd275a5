"""`mrb adapter status`: what this adapter's outbox holds, with reasons, and the receipt
keys it trusts."""

from __future__ import annotations

from rich.table import Table

from adapters.common.outbox import DELIVERED, PENDING, REJECTED
from adapters.common.site import Site, console
from adapters.common.wiring import NO_RECEIPT_KEY, open_outbox, receipt_trust


def show(site: Site, *, hospital: str | None, limit: int, receipt_key: list[str] | None) -> None:
    """Pending, delivered and rejected messages; receipts refused and the keys trusted."""
    trust = receipt_trust(site, receipt_key, warn=False)
    outbox = open_outbox(site)
    try:
        counts = outbox.counts(hospital)
        refusals = outbox.refusals(hospital)
        replayed = outbox.replayed_count(hospital)
        console.print(
            f"pending: {counts[PENDING]}, delivered: {counts[DELIVERED]}"
            + (f" ({replayed} after a rejection, replayed by the broker)" if replayed else "")
            + f", rejected: {counts[REJECTED]}, receipts refused: "
            f"{sum(r.count for r in refusals)}"
        )
        if trust:
            console.print(
                f"receipt keys trusted: {', '.join(trust.key_ids())} "
                f"(from {', '.join(trust.sources)})"
            )
        else:
            console.print(f"[yellow]receipt keys trusted: none[/yellow]: {NO_RECEIPT_KEY}")
        for state in (PENDING, REJECTED):
            rows = outbox.listing(state, hospital, limit)
            if not rows:
                continue
            table = Table(
                "hospital", "message id", "from", "attempts", "code", "reason", title=state
            )
            for s in rows:
                table.add_row(
                    s.hospital,
                    s.message_id,
                    s.origin,
                    str(s.attempts),
                    s.error_code or "",
                    s.error_detail or "",
                )
            console.print(table)
        if refusals:
            table = Table(
                "hospital",
                "reason",
                "count",
                "last",
                "last message id",
                "key id",
                "detail",
                title="receipts refused",
            )
            for r in refusals:
                table.add_row(
                    r.hospital,
                    r.reason,
                    str(r.count),
                    r.last_at,
                    r.last_message_id,
                    r.last_key_id or "",
                    r.last_detail,
                )
            console.print(table)
    finally:
        outbox.close()
