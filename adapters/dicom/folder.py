"""Folder mode: DICOM files on disk (an export, a CD copy, a PACS spool) to study bundles.

Every file under the given paths is tried, whatever its name: DICOM files often have
no extension. DICOMDIR indexes and hidden files are skipped; a file that cannot be
published is reported with its DicomInputError code and the run goes on. A file's
"seen" time is its modification time, so the same files give the same bundles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from adapters.dicom.bundle import BundleOptions, StudyBundle, study_bundle
from adapters.dicom.headers import DicomErrorCode, DicomInputError, read_headers
from adapters.dicom.study import SeenInstance, StudySet

SKIPPED_NAMES = frozenset({"DICOMDIR", "THUMBS.DB", "DESKTOP.INI"})


@dataclass(frozen=True)
class FileProblem:
    """A file that was not published, and why (the code names the fix)."""

    path: Path
    code: DicomErrorCode
    detail: str


@dataclass(frozen=True)
class FolderResult:
    bundles: tuple[StudyBundle, ...]
    problems: tuple[FileProblem, ...]
    files: int  # files tried


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files in the order given; directories recursively, sorted, without hidden entries."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                hidden = any(p.startswith(".") for p in found.relative_to(path).parts)
                if found.is_file() and not hidden and found.name.upper() not in SKIPPED_NAMES:
                    yield found
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def scan(
    paths: Iterable[Path],
    *,
    options: BundleOptions,
    zone: tzinfo,
    fallback_charset: str | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> Iterator[FileProblem | StudyBundle]:
    """Yield each problem as its file is read, then one bundle per study, by Study UID.

    Raises FileNotFoundError for a path that does not exist.
    """
    studies = StudySet()
    for path in iter_files(paths):
        if on_file is not None:
            on_file(path)
        try:
            headers = read_headers(path, zone=zone, fallback_charset=fallback_charset)
            seen = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            studies.add(SeenInstance(headers, seen))
        except DicomInputError as exc:
            yield FileProblem(path, exc.code, exc.detail)
        except OSError as exc:
            yield FileProblem(path, DicomErrorCode.UNREADABLE, f"cannot read: {exc.strerror}")
    for study in studies.studies():
        yield study_bundle(study, options)


def read_folder(
    paths: Iterable[Path],
    *,
    options: BundleOptions,
    zone: tzinfo,
    fallback_charset: str | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> FolderResult:
    """Everything `scan` yields, collected."""
    files = 0

    def count(path: Path) -> None:
        nonlocal files
        files += 1
        if on_file is not None:
            on_file(path)

    bundles: list[StudyBundle] = []
    problems: list[FileProblem] = []
    for item in scan(
        paths, options=options, zone=zone, fallback_charset=fallback_charset, on_file=count
    ):
        if isinstance(item, FileProblem):
            problems.append(item)
        else:
            bundles.append(item)
    return FolderResult(tuple(bundles), tuple(problems), files)
