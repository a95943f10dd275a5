"""What ingest extracts from a message: results, their items, and whose they are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from broker.domain.demographics import Demographics
from broker.domain.identifiers import PatientIdentifier
from broker.domain.versions import VersionKey

# Statuses that take a result out of recognition (DESIGN.md).
WITHDRAWN_STATUSES = frozenset({"cancelled", "entered-in-error"})


class ResultKind(StrEnum):
    LAB = "lab"  # 检验: the data are recognised
    IMAGING = "imaging"  # 检查: an ImagingStudy, i.e. the images
    REPORT = "report"  # a report without its images (never recognisable as imaging)


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class ResultItem:
    """One indexed thing a doctor may order: an observation, a panel, or a study part."""

    resource_type: str
    resource_id: str | None
    codings: tuple[Coding, ...]
    status: str
    effective: datetime | None
    summary: str
    modality: str | None = None
    body_site: Coding | None = None
    laterality: Coding | None = None
    contrast: bool | None = None
    recognition_mark: str | None = None
    protocol: str | None = None  # imaging protocol as sent (urn:mrb:fhir:extension:protocol)
    value: str | None = None
    unit: str | None = None
    flags: tuple[str, ...] = ()  # interpretation codes
    no_value: str | None = None  # why there is no usable content (recognition.content_problem)
    # Imaging: the URL that opens the study's images (its endpoint), sealed with the summary.
    images: str | None = None


@dataclass(frozen=True)
class PatientRef:
    """Who a result belongs to, as the message says it.

    `resource_key` is the hospital-scoped FHIR Patient id: hospitals often send the
    Patient once and then only reference it, so the id is remembered like an MRN.
    With no identifiers, the reference resolves only if that Patient was seen before.
    """

    identifiers: tuple[PatientIdentifier, ...]
    resource_key: PatientIdentifier | None
    birth_date: date | None = None  # Patient.birthDate, a full date only (for age rules)
    # Name, sex, birth date, phone and address as the Patient resource gave them (sealed
    # at rest; patient matching compares them).
    demographics: Demographics | None = None

    @property
    def link_keys(self) -> tuple[PatientIdentifier, ...]:
        keys = self.identifiers
        return (*keys, self.resource_key) if self.resource_key is not None else keys


@dataclass(frozen=True)
class ExtractedResult:
    """One result (a report with its observations, a study, or a lone observation)."""

    kind: ResultKind
    resource_type: str
    business_id: str  # with the hospital, the result's identity
    status: str
    effective: datetime | None  # specimen collection or study start
    issued: datetime | None
    version: VersionKey
    version_label: str | None  # meta.versionId as sent
    content_hash: str
    patient: PatientRef
    summary: str
    items: tuple[ResultItem, ...]
    timezone_assumed: bool = False
    # What was left out without refusing the result (an unusable image endpoint ...).
    warnings: tuple[str, ...] = ()
    # The hash as computed before content_hash's current form (broker.domain.versions),
    # computed only when a version stored with it is met.
    legacy_hash: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    @property
    def withdrawn(self) -> bool:
        return self.status in WITHDRAWN_STATUSES


@dataclass(frozen=True)
class ParsedMessage:
    results: tuple[ExtractedResult, ...]
    patients: tuple[PatientRef, ...] = field(default=())  # Patient resources to link
    ignored_resource_types: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())  # of all its results (receipt, log)
    # The decoded JSON the results came from: the FHIR search index is built from it
    # without decoding the message a second time.
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ResultChange:
    """A result whose newest version became current after it was first indexed."""

    result_id: str
    hospital: str
    status: str
    message_id: str  # of the version that changed it: one notice per change
