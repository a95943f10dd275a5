"""Read FHIR files into message values: one per .json file, one per .ndjson line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".json", ".ndjson")


@dataclass(frozen=True)
class SourceItem:
    origin: str  # file, or file:line for NDJSON
    value: bytes  # the bytes as found: the broker stores them unchanged


def iter_paths(paths: list[Path], suffixes: tuple[str, ...] | None = SUFFIXES) -> Iterator[Path]:
    """Files in the order given; directories recursively, sorted by name.

    In directories, only files with one of `suffixes` (None: every file not hidden).
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and (suffixes is None or p.suffix.lower() in suffixes)
            )
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def read_items(paths: list[Path]) -> Iterator[SourceItem]:
    for path in iter_paths(paths):
        data = path.read_bytes()
        if path.suffix.lower() == ".ndjson":
            for lineno, line in enumerate(data.splitlines(), start=1):
                if line.strip():
                    yield SourceItem(f"{path}:{lineno}", line.strip())
        else:
            yield SourceItem(str(path), data)


def patient_hint(value: bytes) -> str:
    """Something stable per patient to derive the routing key from (never sent as is)."""
    try:
        doc = json.loads(value.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "unparsed"
    if not isinstance(doc, dict):
        return "unparsed"
    resources = [doc]
    if doc.get("resourceType") == "Bundle":
        resources = [
            e["resource"]
            for e in doc.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
    for res in resources:
        if res.get("resourceType") == "Patient":
            for ident in res.get("identifier") or []:
                if isinstance(ident, dict) and ident.get("value"):
                    return f"{ident.get('system')}|{ident['value']}"
            if res.get("id"):
                return f"Patient/{res['id']}"
    for res in resources:
        subject = res.get("subject")
        if isinstance(subject, dict):
            ident = subject.get("identifier")
            if isinstance(ident, dict) and ident.get("value"):
                return f"{ident.get('system')}|{ident['value']}"
            if isinstance(subject.get("reference"), str):
                return str(subject["reference"])
    return "unknown"
