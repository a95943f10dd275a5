"""Collect received instances per study and publish each study once it has gone quiet.

A PACS sends a study as many C-STOREs, often over several associations; publishing per
instance would index half a study. The collector waits until no instance of a study has
arrived for `quiet_seconds`, then hands the study's bundle to `sink` (the outbox). A
study that gains instances later is published again, whole, as a newer version.
Studies stay in memory for `retention_seconds` after their last instance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from adapters.dicom.bundle import BundleOptions, StudyBundle, study_bundle
from adapters.dicom.headers import InstanceHeaders
from adapters.dicom.study import SeenInstance, StudySet

logger = logging.getLogger(__name__)

Sink = Callable[[StudyBundle], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class StudyCollector:
    """Thread-safe: `add` is called from association threads, `poll` from a timer."""

    def __init__(
        self,
        options: BundleOptions,
        sink: Sink,
        *,
        quiet_seconds: float = 5.0,
        retention_seconds: float = 24 * 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.options = options
        self.quiet_seconds = quiet_seconds
        self.retention_seconds = retention_seconds
        self._sink = sink
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._studies = StudySet()
        self._changed: dict[str, float] = {}  # studies awaiting publication: last change
        self._touched: dict[str, float] = {}  # every study: last instance received
        self._publishing = threading.Lock()  # one publisher at a time: no double sends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self, headers: InstanceHeaders, *, seen_at: datetime | None = None, pending: bool = True
    ) -> None:
        """Take one received instance; raises DicomInputError (e.g. a patient mismatch).

        `seen_at` and `pending=False` restore an instance from the spool after a restart
        (already published: it only completes its study if the study grows again).
        """
        with self._lock:
            added = self._studies.add(SeenInstance(headers, seen_at or self._now()))
            if added and pending:
                self._changed[headers.study_uid] = self._monotonic()
            self._touched[headers.study_uid] = self._monotonic()

    @property
    def pending(self) -> int:
        """Studies with instances not yet published."""
        with self._lock:
            return len(self._changed)

    def poll(self) -> list[StudyBundle]:
        """Publish the studies that have been quiet long enough; return what was published."""
        return self._publish(force=False)

    def flush(self) -> list[StudyBundle]:
        """Publish every pending study now (on demand, and on shutdown)."""
        return self._publish(force=True)

    def _publish(self, *, force: bool) -> list[StudyBundle]:
        with self._publishing:
            return self._publish_due(force=force)

    def _publish_due(self, *, force: bool) -> list[StudyBundle]:
        with self._lock:
            now = self._monotonic()
            due = sorted(
                uid
                for uid, changed in self._changed.items()
                if force or now - changed >= self.quiet_seconds
            )
            snapshots = [s for uid in due if (s := self._studies.get(uid)) is not None]
            self._evict(now)
        published: list[StudyBundle] = []
        for study in snapshots:
            bundle = study_bundle(study, self.options)
            try:
                self._sink(bundle)
            except Exception as exc:
                # Kept pending: tried again after another quiet period, never dropped.
                logger.warning(
                    "publishing study %s failed (%s); will retry", study.uid, type(exc).__name__
                )
                with self._lock:
                    if study.uid in self._changed:
                        self._changed[study.uid] = self._monotonic()
                continue
            published.append(bundle)
            with self._lock:
                current = self._studies.get(study.uid)
                if current is not None and len(current.instances) == len(study.instances):
                    self._changed.pop(study.uid, None)  # else it grew meanwhile: stays due
        return published

    def _evict(self, now: float) -> None:
        for uid, touched in list(self._touched.items()):
            if uid not in self._changed and now - touched > self.retention_seconds:
                self._studies.discard(uid)
                self._touched.pop(uid, None)

    def start(self, interval: float | None = None) -> None:
        """Poll in a background thread (every quarter quiet period, at most every second)."""
        if self._thread is not None:
            return
        every = interval if interval is not None else min(max(self.quiet_seconds / 4, 0.01), 1.0)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(every,), name="mrb-dicom-collector", daemon=True
        )
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.poll()
            except Exception:
                logger.exception("study collector poll failed")

    def stop(self, *, flush: bool = True) -> list[StudyBundle]:
        """Stop the background thread; publish what is pending unless `flush` is False."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.flush() if flush else []
