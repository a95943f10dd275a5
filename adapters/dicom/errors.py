"""Why a DICOM object cannot be published: one code per cause, each with its fix."""

from __future__ import annotations

from enum import StrEnum


class DicomErrorCode(StrEnum):
    UNREADABLE = "DICOM_UNREADABLE"  # not DICOM, or no data set could be read
    TRUNCATED = "DICOM_TRUNCATED"  # the object ends before what it declares
    NO_STUDY_UID = "DICOM_NO_STUDY_UID"  # Study Instance UID (0020,000D) missing/invalid
    NO_INSTANCE_UID = "DICOM_NO_INSTANCE_UID"  # SOP Instance/Class or Series UID missing
    NO_PATIENT = "DICOM_NO_PATIENT"  # Patient ID (0010,0020) empty
    PATIENT_MISMATCH = "DICOM_PATIENT_MISMATCH"  # one study, two patients


class DicomInputError(ValueError):
    """A DICOM object mrb cannot publish; `code` says why, `detail` what to do (no PHI)."""

    def __init__(self, code: DicomErrorCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
