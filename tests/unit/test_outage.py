"""What counts as a database outage (retry later) rather than an error of the work.

The shapes are the ones seen through a TCP proxy cut in front of PostgreSQL
(tests/e2e/test_worker_faults.py).
"""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from broker.domain.errors import Unavailable
from broker.storage.outage import conflicts_raised_as, is_outage, outages_retriable


class PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def dbapi(orig: Exception, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed"),  # connecting, server refusing
        TimeoutError(),  # connecting to a host that does not answer
        dbapi(ConnectionResetError(), invalidated=True),  # reset mid-transaction
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),  # backend gone
        OperationalError("SELECT 1", {}, Exception("database is locked")),  # SQLite busy
        dbapi(PgError("57P03")),  # the database system is starting up
        dbapi(PgError("08006")),  # connection failure
        dbapi(PgError("25006")),  # read-only: a standby, failover under way
        PgError("53300"),  # too many connections, raised by asyncpg at connect
        dbapi(PgError("40P01")),  # deadlock: two workers merging the same people
        dbapi(PgError("40001")),  # serialization failure
    ],
)
def test_outages(exc: BaseException) -> None:
    assert is_outage(exc)


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, PgError("23505")),  # a conflict: the work's own
        dbapi(PgError("22P02")),  # invalid input
        dbapi(Exception("no sqlstate")),
        ValueError("bad message"),
    ],
)
def test_not_outages(exc: BaseException) -> None:
    assert not is_outage(exc)


class Met(Exception):
    """Stands for ports.ingest.Collision: another worker wrote the same rows."""


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, PgError("23505")),  # a key the other worker took
        dbapi(PgError("40P01")),  # the two deadlocked
        dbapi(PgError("40001")),  # serialization failure
    ],
)
def test_conflicts_are_raised_as_the_callers_error_not_as_outages(exc: Exception) -> None:
    # As the ingest flush nests them: the conflict is tried again at once, not paused.
    with pytest.raises(Met) as raised, outages_retriable(), conflicts_raised_as(Met):
        raise exc
    assert raised.value.__cause__ is exc


@pytest.mark.parametrize(
    "exc", [dbapi(PgError("08006")), dbapi(ConnectionResetError(), invalidated=True)]
)
def test_an_outage_inside_stays_an_outage(exc: Exception) -> None:
    with pytest.raises(Unavailable), outages_retriable(), conflicts_raised_as(Met):
        raise exc


def test_other_errors_pass_unchanged() -> None:
    with (
        pytest.raises(ValueError, match="bad message"),
        outages_retriable(),
        conflicts_raised_as(Met),
    ):
        raise ValueError("bad message")
