"""Load schemas/policy/purposes.yaml (the purposes of use, with HL7 v3 ActReason codes)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from broker.domain.purposes import Purpose, PurposeTable
from broker.reference.loader import ReferenceDataError, _read, cited, default_schemas_dir


def purposes_path(schemas: Path) -> Path:
    return schemas / "policy" / "purposes.yaml"


def load_purposes(schemas: Path) -> PurposeTable:
    path = purposes_path(schemas)
    doc = _read(path, None)
    return purposes_of(doc, where=str(path))


def purposes_of(doc: Any, *, where: str) -> PurposeTable:
    """The table a document describes; ReferenceDataError names what is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("purposes"), list):
        raise ReferenceDataError(f"{where}: `purposes` must be a list")
    out: list[Purpose] = []
    seen: set[str] = set()
    for p in doc["purposes"]:
        try:
            purpose = Purpose(
                code=str(p["code"]),
                v3=str(p["v3"]).upper(),
                name_zh=str(p["name"]["zh"]),
                name_en=str(p["name"]["en"]),
                doctor=bool(p.get("doctor", False)),
                emergency=bool(p.get("emergency", False)),
                basis=tuple(line for b in p.get("basis") or () if (line := cited(b))),
            )
        except (KeyError, TypeError) as exc:
            raise ReferenceDataError(f"{where}: a purpose lacks {exc}") from None
        for key in (purpose.code.lower(), purpose.v3.lower()):
            if key in seen:
                raise ReferenceDataError(f"{where}: {key!r} names two purposes")
            seen.add(key)
        out.append(purpose)
    return PurposeTable(tuple(out), str(doc.get("purposes_version", "none")))


@functools.cache
def shipped_purposes() -> PurposeTable:
    """The list shipped with mrb (read once per process)."""
    return load_purposes(default_schemas_dir())
