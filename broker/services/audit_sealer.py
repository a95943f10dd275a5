"""Seals the audit trail into its hash chain every few seconds and exports each checkpoint.

It runs where the sealer key is: `mrb audit seal --follow`, or a worker given the key
(MRB_AUDIT_SEALER_KEY; every `mrb up`/`mrb demo`). A process without it does not seal
(`AuditSealer.idle`). Checkpoints are exported after their transaction commits;
what a crash left unexported is exported first on the next round, and nothing new is
sealed while the export cannot be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from broker.observability import AUDIT_LAST_SEAL, AUDIT_SEAL_FAILURES
from broker.ports.audit_trail import AuditChainUnitOfWork, CheckpointSigner
from broker.storage.audit_export import CheckpointExport
from broker.storage.outage import is_outage

logger = logging.getLogger(__name__)


class ChainBehindExport(RuntimeError):
    """The export holds checkpoints the database no longer has: nothing is sealed over it."""


class AuditSealer:
    def __init__(
        self,
        uow: Callable[[], AuditChainUnitOfWork],
        key: CheckpointSigner | None,
        export: CheckpointExport | None,
        *,
        interval: float = 5.0,
    ) -> None:
        if key is not None and export is None:
            raise ValueError(
                "the audit sealer needs a checkpoint export: set MRB_AUDIT_EXPORT to a file "
                "path outside the database host (see docs/security.md, Audit trail)"
            )
        self._uow = uow
        self._key = key
        self._export = export
        self._interval = interval
        self._exported: int | None = None  # the last seq known to be in the export
        self.sealed = 0

    @classmethod
    def idle(cls, uow: Callable[[], AuditChainUnitOfWork]) -> AuditSealer:
        """For a process without the sealer key: it waits for stop and seals nothing."""
        return cls(uow, None, None)

    @property
    def active(self) -> bool:
        return self._key is not None

    async def seal_once(self) -> int:
        """Export what is left, seal what is new, export its checkpoint; entries sealed."""
        if self._key is None or self._export is None:
            raise RuntimeError("this process holds no audit sealer key")
        await self.export_pending()
        async with self._uow() as uow:
            n = await uow.chain.seal(self._key)
            await uow.commit()
        if n:
            await self.export_pending()
        self.sealed += n
        AUDIT_LAST_SEAL.set_to_current_time()
        return n

    async def export_pending(self) -> int:
        """Append the database's checkpoints the export does not have yet; how many."""
        if self._export is None:
            return 0
        export = self._export
        if self._exported is None:
            self._exported = await asyncio.to_thread(export.last_seq)
        async with self._uow() as uow:
            newest = await uow.chain.last_checkpoint()
            pending = await uow.chain.checkpoints_after(self._exported)
        if newest < self._exported:
            # Sealing on would sign a second history under seqs the export already holds.
            raise ChainBehindExport(
                f"the database's audit checkpoints end at seq {newest} but the export "
                f"{export.location} holds seq {self._exported}: entries or checkpoints were "
                "removed (or an older backup restored); nothing is sealed until this is "
                "resolved (run `mrb audit verify`; docs/operations.md)"
            )
        if pending:
            await asyncio.to_thread(export.append, pending)
            self._exported = pending[-1].seq
        return len(pending)

    async def run(self, stop: asyncio.Event) -> None:
        if self._key is None:
            logger.info(
                "audit sealing is off in this process (it holds no sealer key): the sealer "
                "host runs `mrb audit seal --follow`"
            )
            await stop.wait()
            return
        while not stop.is_set():
            try:
                await self.seal_once()
            except OSError as exc:
                AUDIT_SEAL_FAILURES.labels("export").inc()
                logger.error("audit checkpoint export failed, sealing waits for it: %s", exc)
            except ChainBehindExport as exc:
                AUDIT_SEAL_FAILURES.labels("behind-export").inc()
                logger.error("audit sealing stopped: %s", exc)
            except Exception as exc:  # a lost connection is a plain DBAPIError on asyncpg
                if not is_outage(exc):
                    raise
                AUDIT_SEAL_FAILURES.labels("database").inc()
                logger.warning("audit sealing postponed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
        try:
            await self.seal_once()  # what the last requests audited, before stopping
        except Exception as exc:  # already logged each round: stop all the same
            if not (isinstance(exc, ChainBehindExport) or is_outage(exc)):
                raise
