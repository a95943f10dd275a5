"""The study collector: quiet periods, republication, retries, flush (fake clocks)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.dicom.bundle import BundleOptions, StudyBundle
from adapters.dicom.collector import StudyCollector
from adapters.dicom.headers import (
    DicomErrorCode,
    DicomInputError,
    InstanceHeaders,
    PatientIdHeader,
    read_headers,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)


class Clock:
    """Monotonic seconds and wall time that move only when told to."""

    def __init__(self) -> None:
        self.seconds = 100.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds - 100.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class Sink:
    def __init__(self) -> None:
        self.bundles: list[StudyBundle] = []
        self.fail = False

    def __call__(self, bundle: StudyBundle) -> None:
        if self.fail:
            raise ConnectionError("outbox unavailable")
        self.bundles.append(bundle)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def collector(clock: Clock, sink: Sink) -> StudyCollector:
    return StudyCollector(
        BundleOptions("H001"),
        sink,
        quiet_seconds=5.0,
        retention_seconds=3600.0,
        monotonic=clock.monotonic,
        now=clock.now,
    )


@pytest.fixture
def mr(realdata: Path) -> InstanceHeaders:
    return read_headers(realdata / "dicom" / "MR_small.dcm", zone=SHANGHAI)


@pytest.fixture
def ct(realdata: Path) -> InstanceHeaders:
    return read_headers(realdata / "dicom" / "CT_small.dcm", zone=SHANGHAI)


def nth(h: InstanceHeaders, n: int) -> InstanceHeaders:
    return replace(h, sop_instance_uid=f"{h.sop_instance_uid}.{n}", instance_number=n)


def instances_in(bundle: StudyBundle) -> int:
    doc = json.loads(bundle.value)
    study = next(
        e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "ImagingStudy"
    )
    return int(study["numberOfInstances"])


class TestQuietPeriod:
    def test_a_study_is_published_once_it_has_been_quiet(
        self, collector: StudyCollector, clock: Clock, sink: Sink, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        clock.advance(3)
        collector.add(nth(mr, 2))  # still arriving: the quiet period starts again
        clock.advance(4)
        assert collector.poll() == [] and collector.pending == 1
        clock.advance(1)
        (bundle,) = collector.poll()
        assert sink.bundles == [bundle] and collector.pending == 0
        assert instances_in(bundle) == 2
        assert bundle.last_updated == T0 + timedelta(seconds=3)  # when the last one came
        assert collector.poll() == []

    def test_studies_are_published_independently(
        self,
        collector: StudyCollector,
        clock: Clock,
        mr: InstanceHeaders,
        ct: InstanceHeaders,
    ) -> None:
        collector.add(mr)
        clock.advance(4)
        collector.add(ct)
        clock.advance(1)
        assert [b.study_uid for b in collector.poll()] == [mr.study_uid]
        clock.advance(4)
        assert [b.study_uid for b in collector.poll()] == [ct.study_uid]

    def test_flush_publishes_everything_pending_now(
        self, collector: StudyCollector, mr: InstanceHeaders, ct: InstanceHeaders
    ) -> None:
        collector.add(mr)
        collector.add(ct)
        assert sorted(b.study_uid for b in collector.flush()) == sorted(
            [mr.study_uid, ct.study_uid]
        )
        assert collector.pending == 0


class TestRepublication:
    def test_a_study_that_gains_an_instance_is_published_again_whole(
        self, collector: StudyCollector, clock: Clock, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        clock.advance(5)
        (first,) = collector.poll()
        clock.advance(60)
        collector.add(nth(mr, 2))
        clock.advance(5)
        (second,) = collector.poll()
        assert instances_in(first) == 1 and instances_in(second) == 2
        assert second.last_updated > first.last_updated
        assert second.value != first.value

    def test_an_instance_sent_again_publishes_nothing_new(
        self, collector: StudyCollector, clock: Clock, sink: Sink, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        clock.advance(5)
        collector.poll()
        clock.advance(30)
        collector.add(mr)  # the PACS retries an instance mrb already has
        clock.advance(5)
        assert collector.poll() == [] and len(sink.bundles) == 1

    def test_a_study_is_forgotten_after_its_retention(
        self, collector: StudyCollector, clock: Clock, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        clock.advance(5)
        collector.poll()
        clock.advance(3601)
        collector.poll()  # evicts
        collector.add(nth(mr, 2))
        (bundle,) = collector.flush()
        assert instances_in(bundle) == 1  # the documented limit of in-memory state


class TestFailures:
    def test_a_failing_sink_keeps_the_study_and_retries_later(
        self, collector: StudyCollector, clock: Clock, sink: Sink, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        clock.advance(5)
        sink.fail = True
        assert collector.poll() == [] and collector.pending == 1
        sink.fail = False
        clock.advance(1)
        assert collector.poll() == []  # waits another quiet period before retrying
        clock.advance(4)
        (bundle,) = collector.poll()
        assert bundle.study_uid == mr.study_uid and collector.pending == 0

    def test_another_patients_instance_is_refused(
        self, collector: StudyCollector, mr: InstanceHeaders
    ) -> None:
        collector.add(mr)
        with pytest.raises(DicomInputError) as info:
            collector.add(replace(nth(mr, 2), patient=PatientIdHeader("X9")))
        assert info.value.code is DicomErrorCode.PATIENT_MISMATCH
        (bundle,) = collector.flush()
        assert instances_in(bundle) == 1


def test_the_background_thread_publishes_and_stop_flushes(mr: InstanceHeaders) -> None:
    published = threading.Event()
    bundles: list[StudyBundle] = []

    def sink(bundle: StudyBundle) -> None:
        bundles.append(bundle)
        published.set()

    collector = StudyCollector(BundleOptions("H001"), sink, quiet_seconds=0.01)
    collector.start()
    try:
        collector.add(mr)
        assert published.wait(10)
    finally:
        collector.stop()
    assert [b.study_uid for b in bundles] == [mr.study_uid]
    late = StudyCollector(BundleOptions("H001"), sink, quiet_seconds=3600)
    late.start()
    late.add(nth(mr, 2))
    assert [b.study_uid for b in late.stop()] == [mr.study_uid]  # flushed on stop
