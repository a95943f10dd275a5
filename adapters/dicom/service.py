"""The listening DICOM adapter: C-STORE in, spool, studies out through the outbox.

An instance is answered 0x0000 only once its header is in the spool (on disk, sealed).
Quiet studies become bundles, signed and stored in the outbox; the outbox delivers them
and keeps them until the broker's receipt. After a restart the spool rebuilds the
collector, so nothing acknowledged is lost and a study that grows is republished whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from datetime import UTC, datetime, timedelta

from adapters.common.envelope import Signer
from adapters.common.outbox import Outbox
from adapters.dicom.bundle import BundleOptions, StudyBundle
from adapters.dicom.collector import StudyCollector
from adapters.dicom.errors import DicomInputError
from adapters.dicom.headers import InstanceHeaders
from adapters.dicom.spool import Spool
from adapters.fhir.source import patient_hint

logger = logging.getLogger(__name__)


class DicomAdapter:
    """Owns the collector; the outbox and spool are used on the event loop's thread only."""

    def __init__(
        self,
        *,
        options: BundleOptions,
        outbox: Outbox,
        spool: Spool,
        signer: Signer,
        loop: asyncio.AbstractEventLoop,
        quiet_seconds: float = 5.0,
        retention: timedelta = timedelta(hours=24),
    ) -> None:
        self.options = options
        self.outbox = outbox
        self.spool = spool
        self.signer = signer
        self.loop = loop
        self.retention = retention
        self.collector = StudyCollector(
            options,
            self._sink,
            quiet_seconds=quiet_seconds,
            retention_seconds=retention.total_seconds(),
        )
        self.published = 0
        self._loop_thread = threading.get_ident()  # built on the loop's thread

    def restore(self) -> int:
        """Reload the spool into the collector; unpublished instances are due again."""
        self.spool.purge(self.retention)
        n = 0
        for row in self.spool.load():
            try:
                self.collector.add(row.headers, seen_at=row.received_at, pending=not row.published)
            except DicomInputError as exc:
                logger.warning("spooled instance skipped: %s", exc.code.value)
                continue
            n += 1
        return n

    async def on_instance(self, headers: InstanceHeaders) -> None:
        """Called for each C-STORE: into the collector, then durably into the spool."""
        now = datetime.now(UTC)
        self.collector.add(headers, seen_at=now)  # refuses another patient's study first
        self.spool.put(headers, now)

    def _sink(self, bundle: StudyBundle) -> None:
        """From the collector (its thread, or the loop's on shutdown): into the outbox."""
        if self._on_loop_thread():
            self._enqueue(bundle)
            return
        done = asyncio.run_coroutine_threadsafe(self._enqueue_async(bundle), self.loop)
        done.result(timeout=60)

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    async def _enqueue_async(self, bundle: StudyBundle) -> None:
        self._enqueue(bundle)

    def _enqueue(self, bundle: StudyBundle) -> None:
        message = self.signer.message(bundle.value, patient_hint(bundle.value))
        study = hashlib.sha256(bundle.study_uid.encode()).hexdigest()[:12]
        origin = f"dicom study {study}: {bundle.number_of_instances} instance(s)"
        self.outbox.add([(message, origin)])
        self.spool.mark_published(bundle.study_uid, bundle.last_updated)
        self.published += 1
