"""What the use cases need from the world outside the domain, as abstract ports, one module
per use case (`check` is the recognition check's).

`broker/storage/` implements them with SQLAlchemy; `tests/fakes.py` implements them in
memory, so a use case is unit-tested without a database. One unit of work per use case:
its repositories share one transaction, committed once by the use case.

Submodules load on first use (PEP 562 `__getattr__`): an admin command that needs one
port does not import every use case's dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.ports.cds import (
        CallAdmission,
        Cards,
        CdsClients,
        CdsResults,
        CdsUnitOfWork,
        CheckRecords,
        ClientRow,
        DraftCheck,
        DraftOrders,
        PriorResultState,
        RegisteredClient,
        StoredCard,
    )
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
    from broker.ports.fhir import (
        Admission,
        FhirIndex,
        FhirReindex,
        FhirUnitOfWork,
        Hit,
        IndexedResource,
        Opened,
        Payloads,
        PersonRecord,
    )
    from broker.ports.outcomes import (
        AlreadyWritten,
        CandidateResults,
        CheckedItems,
        Ledger,
        LedgerEntry,
        Notice,
        NoticedCheck,
        Notices,
        NoticeUnitOfWork,
        NoticeView,
        Outcome,
        Outcomes,
        OutcomeUnitOfWork,
        RecordedChecks,
        ResultState,
        SafetyUnitOfWork,
    )
    from broker.ports.reports import ReportFigures
    from broker.ports.unit_of_work import UnitOfWork

_WHERE = {
    "Admission": "broker.ports.fhir",
    "AlreadyWritten": "broker.ports.outcomes",
    "Audit": "broker.ports.check",
    "CallAdmission": "broker.ports.cds",
    "CandidateResults": "broker.ports.outcomes",
    "Cards": "broker.ports.cds",
    "CdsClients": "broker.ports.cds",
    "CdsResults": "broker.ports.cds",
    "CdsUnitOfWork": "broker.ports.cds",
    "CheckRecords": "broker.ports.cds",
    "CheckUnitOfWork": "broker.ports.check",
    "CheckedItems": "broker.ports.outcomes",
    "Checks": "broker.ports.check",
    "ClientRow": "broker.ports.cds",
    "DraftCheck": "broker.ports.cds",
    "DraftOrders": "broker.ports.cds",
    "Events": "broker.ports.check",
    "FhirIndex": "broker.ports.fhir",
    "FhirReindex": "broker.ports.fhir",
    "FhirUnitOfWork": "broker.ports.fhir",
    "Hit": "broker.ports.fhir",
    "Hospitals": "broker.ports.check",
    "IndexedResource": "broker.ports.fhir",
    "Ledger": "broker.ports.outcomes",
    "LedgerEntry": "broker.ports.outcomes",
    "LocalCodes": "broker.ports.check",
    "Mappings": "broker.ports.check",
    "Notice": "broker.ports.outcomes",
    "NoticeUnitOfWork": "broker.ports.outcomes",
    "NoticeView": "broker.ports.outcomes",
    "NoticedCheck": "broker.ports.outcomes",
    "Notices": "broker.ports.outcomes",
    "Opened": "broker.ports.fhir",
    "Outcome": "broker.ports.outcomes",
    "OutcomeUnitOfWork": "broker.ports.outcomes",
    "Outcomes": "broker.ports.outcomes",
    "Payloads": "broker.ports.fhir",
    "People": "broker.ports.check",
    "PersonRecord": "broker.ports.fhir",
    "PriorResultState": "broker.ports.cds",
    "RecordedCheck": "broker.ports.check",
    "RecordedChecks": "broker.ports.outcomes",
    "RegisteredClient": "broker.ports.cds",
    "ReportFigures": "broker.ports.reports",
    "ResultState": "broker.ports.outcomes",
    "Results": "broker.ports.check",
    "SafetyUnitOfWork": "broker.ports.outcomes",
    "StoredCard": "broker.ports.cds",
    "UnitOfWork": "broker.ports.unit_of_work",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Admission",
    "AlreadyWritten",
    "Audit",
    "CallAdmission",
    "CandidateResults",
    "Cards",
    "CdsClients",
    "CdsResults",
    "CdsUnitOfWork",
    "CheckRecords",
    "CheckUnitOfWork",
    "CheckedItems",
    "Checks",
    "ClientRow",
    "DraftCheck",
    "DraftOrders",
    "Events",
    "FhirIndex",
    "FhirReindex",
    "FhirUnitOfWork",
    "Hit",
    "Hospitals",
    "IndexedResource",
    "Ledger",
    "LedgerEntry",
    "LocalCodes",
    "Mappings",
    "Notice",
    "NoticeUnitOfWork",
    "NoticeView",
    "NoticedCheck",
    "Notices",
    "Opened",
    "Outcome",
    "OutcomeUnitOfWork",
    "Outcomes",
    "Payloads",
    "People",
    "PersonRecord",
    "PriorResultState",
    "RecordedCheck",
    "RecordedChecks",
    "RegisteredClient",
    "ReportFigures",
    "ResultState",
    "Results",
    "SafetyUnitOfWork",
    "StoredCard",
    "UnitOfWork",
]
