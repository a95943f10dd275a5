"""Instances grouped by Study Instance UID (0020,000D): the unit the adapter publishes.

A study's bundle is a pure function of the instances seen and when each was first
seen, so the same instances always give the same bytes, and a study that gains an
instance gives a bundle with a later meta.lastUpdated (see fhir.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from adapters.dicom.headers import DicomErrorCode, DicomInputError, InstanceHeaders
from adapters.dicom.sr import is_report


@dataclass(frozen=True)
class SeenInstance:
    """An instance's headers and when the adapter first saw it (aware datetime)."""

    headers: InstanceHeaders
    seen_at: datetime

    def sort_key(self) -> tuple[bool, int, str, bool, int, str]:
        h = self.headers
        return (
            h.series_number is None,
            h.series_number or 0,
            h.series_uid,
            h.instance_number is None,
            h.instance_number or 0,
            h.sop_instance_uid,
        )


@dataclass(frozen=True)
class Series:
    uid: str
    instances: tuple[SeenInstance, ...]

    @property
    def number(self) -> int | None:
        return self.instances[0].headers.series_number

    @property
    def modality(self) -> str | None:
        return next((i.headers.modality for i in self.instances if i.headers.modality), None)

    @property
    def description(self) -> str | None:
        found = (i.headers.series_description for i in self.instances)
        return next((d for d in found if d), None)


@dataclass(frozen=True)
class Study:
    """One study's instances, sorted by series and instance number, then UID."""

    uid: str
    instances: tuple[SeenInstance, ...]

    @property
    def images(self) -> tuple[SeenInstance, ...]:
        """Instances that are not reports (images, and e.g. presentation states)."""
        return tuple(i for i in self.instances if not is_report(i.headers.sop_class_uid))

    @property
    def reports(self) -> tuple[SeenInstance, ...]:
        """SR text reports and encapsulated PDF/CDA reports."""
        return tuple(i for i in self.instances if is_report(i.headers.sop_class_uid))

    def series(self) -> tuple[Series, ...]:
        """The image series, in instance order."""
        grouped: dict[str, list[SeenInstance]] = {}
        for inst in self.images:
            grouped.setdefault(inst.headers.series_uid, []).append(inst)
        return tuple(Series(uid, tuple(items)) for uid, items in grouped.items())

    @property
    def last_seen(self) -> datetime:
        return max(i.seen_at for i in self.instances)

    @property
    def headers(self) -> InstanceHeaders:
        """The first instance's headers: the study's patient and study-level attributes."""
        return self.instances[0].headers

    def first(self, attribute: str) -> object:
        """The first non-empty value of a study-level attribute across the instances."""
        return next(
            (v for i in self.instances if (v := getattr(i.headers, attribute)) is not None), None
        )


def patient_key(headers: InstanceHeaders) -> tuple[str, str | None]:
    return headers.patient.value, headers.patient.issuer


class StudySet:
    """Instances by study; the first instance of a study fixes its patient."""

    def __init__(self) -> None:
        self._studies: dict[str, dict[str, SeenInstance]] = {}

    def add(self, instance: SeenInstance) -> bool:
        """Add an instance; False when it was already there (its first sighting is kept).

        Raises DICOM_PATIENT_MISMATCH for an instance whose Patient ID differs from the
        one its study already has: publishing it would file images under the wrong person.
        """
        h = instance.headers
        members = self._studies.get(h.study_uid)
        if members:
            first = next(iter(members.values())).headers
            if patient_key(first) != patient_key(h):
                raise DicomInputError(
                    DicomErrorCode.PATIENT_MISMATCH,
                    f"study {h.study_uid} already belongs to another Patient ID; "
                    "reconcile the patient in the PACS before sending it again",
                )
            if h.sop_instance_uid in members:
                return False
        self._studies.setdefault(h.study_uid, {})[h.sop_instance_uid] = instance
        return True

    def get(self, uid: str) -> Study | None:
        members = self._studies.get(uid)
        if not members:
            return None
        return Study(uid, tuple(sorted(members.values(), key=SeenInstance.sort_key)))

    def studies(self) -> list[Study]:
        return [s for uid in sorted(self._studies) if (s := self.get(uid)) is not None]

    def discard(self, uid: str) -> None:
        self._studies.pop(uid, None)

    def __len__(self) -> int:
        return len(self._studies)


def group(
    instances: Iterable[SeenInstance],
) -> tuple[list[Study], list[tuple[SeenInstance, DicomInputError]]]:
    """Group instances into studies; instances that conflict with their study come back."""
    found = StudySet()
    rejected: list[tuple[SeenInstance, DicomInputError]] = []
    for inst in instances:
        try:
            found.add(inst)
        except DicomInputError as exc:
            rejected.append((inst, exc))
    return found.studies(), rejected
