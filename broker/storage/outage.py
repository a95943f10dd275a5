"""Telling a database outage from a statement the database refused.

An outage (down, unreachable, connection lost, shutting down, a read-only standby after
a failover) means: keep the work and try again later. So does a conflict the database
resolved by aborting our transaction (a deadlock between workers linking the same
people, a serialization failure): the same work succeeds when tried again. Anything else
is a real error of that work. What surfaces differs by driver and by moment, as seen
through a TCP proxy cut in front of PostgreSQL (tests/e2e/test_worker_faults.py):

- connecting while the server refuses: a raw ConnectionRefusedError (asyncpg connects
  outside SQLAlchemy's exception wrapping; a timeout is TimeoutError, also an OSError);
- a connection reset mid-transaction or at commit: DBAPIError with
  connection_invalidated (asyncpg ConnectionDoesNotExistError), not OperationalError;
- the backend terminated (server restart): InterfaceError "connection is closed";
- SQLite busy or its disk failing: OperationalError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from broker.domain.errors import Unavailable

# SQLSTATEs of a server that cannot serve now (PostgreSQL appendix A): class 08
# connection exception, 53300 too many connections, 57P01-57P03 shutdown/starting up,
# 25006 a read-only transaction (a standby promoted late or a failover in progress);
# and of a transaction aborted to resolve a conflict: 40P01 deadlock, 40001 serialization.
_CONFLICT_STATES = ("40P01", "40001")
_UNAVAILABLE_STATES = ("08", "53300", "57P01", "57P02", "57P03", "25006", *_CONFLICT_STATES)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says: try again later (the database is unavailable, or aborted us
    to resolve a conflict), rather than: this work is wrong."""
    if isinstance(exc, OperationalError | InterfaceError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return _sqlstate(exc.orig).startswith(_UNAVAILABLE_STATES)
    return _sqlstate(exc).startswith(_UNAVAILABLE_STATES)  # asyncpg's own, raised at connect


def _sqlstate(error: BaseException | None) -> str:
    state = getattr(error, "sqlstate", None)
    return state if isinstance(state, str) else "\0"


@contextlib.contextmanager
def outages_retriable() -> Iterator[None]:
    """Raise an outage in the block as domain `Unavailable` (its `retriable` flag set),
    the driver's exception as its cause; anything else passes unchanged."""
    try:
        yield
    except Unavailable:
        raise
    except Exception as exc:
        if is_outage(exc):
            raise Unavailable(
                "Storage unavailable",
                f"the database cannot serve now ({type(exc).__name__}); try again",
            ) from exc
        raise


@contextlib.contextmanager
def conflicts_raised_as(error: type[Exception]) -> Iterator[None]:
    """Raise `error` for a statement refused because another transaction wrote the same
    rows at the same moment: a key it took meanwhile (an integrity error), or a deadlock or
    serialization failure that aborted ours. The caller decides how to try again (inside
    `outages_retriable`, these never become an outage)."""
    try:
        yield
    except IntegrityError as exc:
        raise error(str(exc.orig)[:200]) from exc
    except DBAPIError as exc:
        if _sqlstate(exc.orig).startswith(_CONFLICT_STATES):
            raise error(str(exc.orig)[:200]) from exc
        raise
