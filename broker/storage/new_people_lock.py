"""Two ingest workers creating the same new person take turns instead of colliding.

With `mrb worker --processes N` on PostgreSQL, a patient seen for the first time at two
hospitals at once (their messages sit on different partitions) is linked by two batches.
The unique index on person_link let one of them fail (`Collision`) and try again; while
the other worker went on to its next batch of new patients, the loser kept meeting them,
ran out of bulk attempts and went message by message, a savepoint each: one bench round
of two workers took four times as long (docs/performance.md, "Tenth round").

Now a batch, after reading the people its identifiers name, takes a transaction-scoped
advisory lock on each pseudonym it did not find, then reads those again: a worker that
links the same pseudonym first holds its lock until it commits, so the second waits and
then finds the person. Locks are taken in one statement in ascending order, so two
batches cannot deadlock on them. They are buckets of the pseudonym (BUCKETS of them, in
a class of their own): a batch never holds more than BUCKETS locks, whatever its size,
which keeps PostgreSQL's shared lock table (64 x max_connections entries by default)
well clear; two batches whose new people share a bucket merely wait for each other.
Correctness never rests on the locks: the unique index still refuses a second link, and
a batch that meets it is tried again as before (a link made by review takes no lock). The
message-by-message fallback takes them per message, in several statements, so two such
batches can deadlock; PostgreSQL breaks that after `deadlock_timeout` and the message is
tried again (a `Collision`). SQLite has one writer at a time and needs none of this.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# A class id of its own (the two-key form; the rate limits use the one-key form, which
# never meets it): "mp", new people.
LOCK_CLASS = 0x6D70
# 256: a worker holds at most 256 of these at once, so 20 worker processes fit in
# PostgreSQL's default shared lock table (64 x max_connections = 6,400 entries) with room
# for everything else; two batches with 5 new people each share a bucket 1 time in 10.
BUCKETS = 256

_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(:class, b)) FROM "
    "(SELECT b FROM unnest(CAST(:buckets AS integer[])) AS b ORDER BY b) AS ordered"
)


def buckets(pseudonyms: Iterable[str]) -> list[int]:
    """The lock buckets of these pseudonyms, each once, ascending."""
    return sorted({zlib.crc32(p.encode()) % BUCKETS for p in pseudonyms})


async def wait_for_new_people(session: AsyncSession, pseudonyms: Iterable[str]) -> bool:
    """Lock the buckets of pseudonyms no person holds yet (PostgreSQL; until commit).
    True when locks were taken: the caller reads those pseudonyms again."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    wanted = buckets(pseudonyms)
    if not wanted:
        return False
    await session.execute(_LOCK, {"class": LOCK_CLASS, "buckets": wanted})
    return True
