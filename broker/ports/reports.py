"""The finance and regulator reports' port: sums of the ledger, counts of declines and the
checks of a month, read in one session. The arithmetic over them is the service's."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from broker.domain.check_items import StoredCheckItem
from broker.domain.registry import HospitalProfile

# hospital: the ordering hospital; source: the hospital whose result was recognised;
# item: the catalog code; month: the booked period.
Dimension = Literal["hospital", "source", "item", "month", "category"]
# Which side of a recognition a hospital scope names: the hospital that ordered (and saved
# the repeat test), or the hospital whose result made the saving possible.
Side = Literal["ordering", "source"]


@dataclass(frozen=True)
class Window:
    """Booked months [period_from, period_to] (None: open), of one hospital or all, on the
    ordering side or the source side (`side`)."""

    period_from: str | None = None
    period_to: str | None = None
    hospital: str | None = None
    side: Side = "ordering"


@dataclass(frozen=True)
class LedgerSum:
    """Ledger entries of one kind (saving, reversal, flag) in one group: how many, how much."""

    key: tuple[str | None, ...]  # one value per dimension asked for
    kind: str
    count: int
    fen: int
    # Of those, the entries whose split was fixed when booked (a ratio was given), and the
    # sums of their fund's and patient's shares (fund + patient = their amounts).
    split_count: int = 0
    fund_fen: int = 0
    patient_fen: int = 0


@dataclass(frozen=True)
class DeclineCount:
    """Declined recognitions for one reason in one group."""

    key: tuple[str | None, ...]
    reason: str
    count: int


@dataclass(frozen=True)
class OrderedCheck:
    """A recorded check: who ordered, and the items it looked up."""

    ordering_hospital: str
    items: tuple[StoredCheckItem, ...]


class ReportFigures(abc.ABC):
    @abc.abstractmethod
    async def ledger_sums(self, by: Sequence[Dimension], window: Window) -> list[LedgerSum]:
        """Ledger entries in the window grouped by the dimensions (none: totals) and kind."""

    @abc.abstractmethod
    async def decline_counts(self, by: Sequence[Dimension], window: Window) -> list[DeclineCount]:
        """Declined outcomes in the window grouped by the dimensions and reason."""

    @abc.abstractmethod
    async def checks(self, start: datetime, end: datetime) -> list[OrderedCheck]:
        """Checks recorded in [start, end)."""

    @abc.abstractmethod
    async def hospitals(self) -> Mapping[str, HospitalProfile]:
        """Every registered hospital (ordered by id) with its certifications."""
