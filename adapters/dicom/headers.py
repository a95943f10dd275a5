"""Read what mrb needs from a DICOM object's header, never its pixels.

Reading stops at Pixel Data (7FE0,0010) (or Float/Double Float Pixel Data, or an
Encapsulated Document (0042,0011)); only the element's declared length is looked at, to
tell a complete object from a truncated one (PS3.5 section 7.1 and A.4). Attribute
names and tags follow PS3.3 (Patient, General Study, General Series, SOP Common, SR
Document modules).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from adapters.dicom import dicom_time
from adapters.dicom.completeness import PIXEL_TAGS, UNDEFINED, Extent, check_complete
from adapters.dicom.errors import DicomErrorCode, DicomInputError
from adapters.dicom.sr import document_title, report_text
from adapters.dicom.values import clean, get, has, integer, text, uid, upper

__all__ = [
    "DicomErrorCode",
    "DicomInputError",
    "InstanceHeaders",
    "PatientIdHeader",
    "extract_headers",
    "read_headers",
]

_ENCAPSULATED_DOCUMENT = 0x00420011
_DEFLATED = "1.2.840.10008.1.2.1.99"
# Any of these means the bytes really are a DICOM data set (a forced read of junk finds none).
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality", "PatientID")
_NO_CONTRAST = frozenset({"", "NONE", "NO", "N", "N/A", "NA", "NIL", "0", "-", "无", "否"})


@dataclass(frozen=True)
class PatientIdHeader:
    """A patient identifier with its issuer: Patient ID (0010,0020) or an Other Patient ID."""

    value: str = field(repr=False)
    issuer: str | None = None  # Issuer of Patient ID (0010,0021)
    type: str | None = None  # Type of Patient ID (0010,0022)
    universal_id: str | None = None  # (0010,0024) > Universal Entity ID (0040,0032)


@dataclass(frozen=True)
class InstanceHeaders:
    """One SOP instance, as far as recognition needs it. PHI fields are kept out of repr."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient: PatientIdHeader
    other_patient_ids: tuple[PatientIdHeader, ...] = field(default=(), repr=False)
    patient_name: str | None = field(default=None, repr=False)  # PN alphabetic group
    patient_name_ideographic: str | None = field(default=None, repr=False)
    birth_date: date | None = field(default=None, repr=False)
    sex: str | None = field(default=None, repr=False)
    modality: str | None = None
    body_part: str | None = None  # Body Part Examined (0018,0015) as sent
    anatomic_region: tuple[str, str, str | None] | None = None  # (scheme, code, meaning)
    laterality: str | None = None  # Laterality (0020,0060), series level
    image_laterality: str | None = None  # Image Laterality (0020,0062)
    started: datetime | date | None = None  # Study Date/Time in its zone
    accession: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    instance_number: int | None = None
    contrast: bool | None = None  # Contrast/Bolus Agent (0018,0010) present; None: absent
    institution: str | None = None
    completion_flag: str | None = None  # SR (0040,A491)
    verification_flag: str | None = None  # SR (0040,A493)
    content_time: datetime | None = None  # Content Date/Time: when a report was written
    document_title: str | None = None
    report_text: tuple[str, ...] = field(default=(), repr=False)  # SR TEXT content items
    transfer_syntax: str | None = None


def read_headers(
    source: Path | str | bytes | BinaryIO,
    *,
    zone: tzinfo,
    fallback_charset: str | None = None,
) -> InstanceHeaders:
    """Read one DICOM object's header (a file, its bytes, or a binary stream).

    Files without the 128-byte preamble and DICM prefix are read too (forced, with the
    transfer syntax guessed). Times without Timezone Offset From UTC (0008,0201) take
    `zone`, the hospital's. `fallback_charset` (e.g. "GB18030") decodes text of objects
    that omit Specific Character Set (0008,0005), a habit of some Chinese modalities.
    Raises DicomInputError.
    """
    if isinstance(source, Path | str):
        with Path(source).open("rb") as fp:
            return _read(fp, zone, fallback_charset)
    if isinstance(source, bytes):
        return _read(io.BytesIO(source), zone, fallback_charset)
    return _read(source, zone, fallback_charset)


def _read(fp: BinaryIO, zone: tzinfo, fallback_charset: str | None) -> InstanceHeaders:
    fp.seek(0, io.SEEK_END)
    size = fp.tell()
    fp.seek(0)
    extent = Extent()

    def stop_when(tag: BaseTag, vr: str | None, length: int) -> bool:
        offset = fp.tell()  # positioned at the value
        extent.last_end = None if length == UNDEFINED else offset + length
        if extent.last_end is not None:
            extent.value_end = max(extent.value_end, extent.last_end)
        if int(tag) in PIXEL_TAGS or int(tag) == _ENCAPSULATED_DOCUMENT:
            extent.stop_tag, extent.stop_offset, extent.stop_length = int(tag), offset, length
            return True
        return False

    forced = False
    try:
        try:
            ds = read_partial(fp, stop_when=stop_when)
        except InvalidDicomError:  # no preamble/DICM prefix: a bare data set, perhaps
            fp.seek(0)
            extent = Extent()
            forced = True
            with warnings.catch_warnings():  # pydicom's guesses about junk are not news
                warnings.simplefilter("ignore", UserWarning)
                ds = read_partial(fp, stop_when=stop_when, force=True)
    except Exception as exc:
        raise DicomInputError(
            DicomErrorCode.UNREADABLE, f"not a readable DICOM object ({type(exc).__name__})"
        ) from None
    syntax = _transfer_syntax(ds)
    if not any(has(ds, kw) for kw in _IDENTIFYING):
        if forced or size == 0:
            raise DicomInputError(
                DicomErrorCode.UNREADABLE, "not a DICOM object (no DICM prefix, no data set)"
            )
        raise DicomInputError(
            DicomErrorCode.TRUNCATED, "the file ends inside its header; send the object again"
        )
    if syntax != _DEFLATED:  # offsets of a deflated data set are not file offsets
        check_complete(fp, ds, extent, size)
    if fallback_charset and not has(ds, "SpecificCharacterSet"):
        # text is decoded on first access with the encoding recorded at read time
        implicit, little = ds.original_encoding
        ds.set_original_encoding(implicit, little, convert_encodings(fallback_charset))
    return extract_headers(ds, zone=zone, transfer_syntax=syntax)


def _transfer_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(value) if value else None


def extract_headers(
    ds: Dataset, *, zone: tzinfo, transfer_syntax: str | None = None
) -> InstanceHeaders:
    """The headers of a decoded data set; raises DicomInputError when it lacks its UIDs."""
    study_uid = uid(ds, "StudyInstanceUID")
    if study_uid is None:
        raise DicomInputError(
            DicomErrorCode.NO_STUDY_UID,
            "Study Instance UID (0020,000D) is missing or not a UID; fix it at the modality",
        )
    sop_uid = uid(ds, "SOPInstanceUID")
    series_uid = uid(ds, "SeriesInstanceUID")
    meta = getattr(ds, "file_meta", None)
    sop_class = uid(ds, "SOPClassUID") or (
        uid(meta, "MediaStorageSOPClassUID") if meta is not None else None
    )
    if sop_uid is None or series_uid is None or sop_class is None:
        raise DicomInputError(
            DicomErrorCode.NO_INSTANCE_UID,
            "SOP Instance UID, SOP Class UID or Series Instance UID is missing",
        )
    patient_id = text(ds, "PatientID")
    if patient_id is None:
        raise DicomInputError(
            DicomErrorCode.NO_PATIENT,
            "Patient ID (0010,0020) is empty: the study cannot be linked to a patient; "
            "reconcile it with the HIS (modality worklist) and send it again",
        )
    name = get(ds, "PatientName")
    return InstanceHeaders(
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        study_uid=study_uid,
        series_uid=series_uid,
        patient=_patient_id(ds, patient_id),
        other_patient_ids=_other_ids(ds),
        patient_name=clean(getattr(name, "alphabetic", None)) if name else None,
        patient_name_ideographic=clean(getattr(name, "ideographic", None)) if name else None,
        birth_date=dicom_time.birth_date(text(ds, "PatientBirthDate")),
        sex=text(ds, "PatientSex"),
        modality=upper(text(ds, "Modality")),
        body_part=text(ds, "BodyPartExamined"),
        anatomic_region=_anatomic_region(ds),
        laterality=upper(text(ds, "Laterality")),
        image_laterality=upper(text(ds, "ImageLaterality")),
        started=_started(ds, zone),
        accession=text(ds, "AccessionNumber"),
        study_description=text(ds, "StudyDescription"),
        series_description=text(ds, "SeriesDescription"),
        series_number=integer(get(ds, "SeriesNumber")),
        instance_number=integer(get(ds, "InstanceNumber")),
        contrast=_contrast(ds),
        institution=text(ds, "InstitutionName"),
        completion_flag=upper(text(ds, "CompletionFlag")),
        verification_flag=upper(text(ds, "VerificationFlag")),
        content_time=_content_time(ds, zone),
        document_title=document_title(ds),
        report_text=report_text(ds),
        transfer_syntax=transfer_syntax,
    )


def _patient_id(item: Dataset, value: str) -> PatientIdHeader:
    qualifiers = get(item, "IssuerOfPatientIDQualifiersSequence")
    universal = text(qualifiers[0], "UniversalEntityID") if qualifiers else None
    return PatientIdHeader(
        value, text(item, "IssuerOfPatientID"), upper(text(item, "TypeOfPatientID")), universal
    )


def _other_ids(ds: Dataset) -> tuple[PatientIdHeader, ...]:
    out = []
    for item in get(ds, "OtherPatientIDsSequence") or ():
        value = text(item, "PatientID")
        if value is not None:
            out.append(_patient_id(item, value))
    return tuple(out)


def _anatomic_region(ds: Dataset) -> tuple[str, str, str | None] | None:
    seq = get(ds, "AnatomicRegionSequence")
    if not seq:
        return None
    scheme, code = text(seq[0], "CodingSchemeDesignator"), text(seq[0], "CodeValue")
    if scheme is None or code is None:
        return None
    return scheme, code, text(seq[0], "CodeMeaning")


def _started(ds: Dataset, zone: tzinfo) -> datetime | date | None:
    """Study Date/Time, else the series, acquisition or content date (Type 2 may be empty)."""
    offset = dicom_time.utc_offset(text(ds, "TimezoneOffsetFromUTC"))
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        found = dicom_time.combine(
            text(ds, f"{prefix}Date"), text(ds, f"{prefix}Time"), offset or zone
        )
        if found is not None:
            return found
    return None


def _content_time(ds: Dataset, zone: tzinfo) -> datetime | None:
    offset = dicom_time.utc_offset(text(ds, "TimezoneOffsetFromUTC")) or zone
    for prefix in ("Content", "InstanceCreation"):
        found = dicom_time.combine(text(ds, f"{prefix}Date"), text(ds, f"{prefix}Time"), offset)
        if isinstance(found, datetime):
            return found
    return None


def _contrast(ds: Dataset) -> bool | None:
    """Contrast/Bolus Agent (0018,0010) or its sequence (0018,0012): 增强 vs 平扫."""
    if get(ds, "ContrastBolusAgentSequence"):
        return True
    if not has(ds, "ContrastBolusAgent"):
        return None
    agent = text(ds, "ContrastBolusAgent") or ""
    return agent.upper() not in _NO_CONTRAST
