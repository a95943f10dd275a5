"""What the use cases need from the world outside the domain, as abstract ports, one module
per use case (`check` is the recognition check's).

`broker/storage/` implements them with SQLAlchemy; `tests/fakes.py` implements them in
memory, so a use case is unit-tested without a database. One unit of work per use case:
its repositories share one transaction, committed once by the use case.
"""

from broker.ports.check import (
    Audit,
    Checks,
    CheckUnitOfWork,
    Events,
    Hospitals,
    LocalCodes,
    Mappings,
    People,
    RecordedCheck,
    Results,
)

__all__ = [
    "Audit",
    "CheckUnitOfWork",
    "Checks",
    "Events",
    "Hospitals",
    "LocalCodes",
    "Mappings",
    "People",
    "RecordedCheck",
    "Results",
]
