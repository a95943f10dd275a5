"""The shape every use case's unit of work shares: entered for one transaction, committed
once by the use case, rolled back on the way out when it was not."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class UnitOfWork(abc.ABC):
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()  # a no-op after commit

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...
