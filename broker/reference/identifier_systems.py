"""Load schemas/identity/identifier-systems.yaml, checked against its JSON Schema."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from broker.domain.identifier_systems import IdentifierRegistry, IdentifierSystem
from broker.domain.identifiers import IdentifierScope
from broker.reference.loader import ReferenceDataError, _read, cited, default_schemas_dir


def identifier_systems_path(schemas: Path) -> Path:
    return schemas / "identity" / "identifier-systems.yaml"


def load_identifier_registry(schemas: Path) -> IdentifierRegistry:
    """The identifier registry from `schemas`/identity; ReferenceDataError says what is wrong."""
    path = identifier_systems_path(schemas)
    doc = _read(path, path.with_name("identifier-systems.schema.json"))
    hospitals = {
        str(h): {str(k): str(v) for k, v in table.items()}
        for h, table in (doc.get("hospitals") or {}).items()
    }
    try:
        return IdentifierRegistry.build((_system(s) for s in doc["systems"]), hospitals)
    except ValueError as exc:
        raise ReferenceDataError(f"{path}: {exc}") from None


@functools.cache
def shipped_identifier_registry() -> IdentifierRegistry:
    """The registry shipped with mrb (read once per process)."""
    return load_identifier_registry(default_schemas_dir())


def _system(s: dict[str, Any]) -> IdentifierSystem:
    return IdentifierSystem(
        code=s["code"],
        uri=s["uri"],
        name_zh=s["names"]["zh"],
        name_en=s["names"]["en"],
        aliases=tuple(str(a) for a in s["aliases"]),
        scope=IdentifierScope(s["scope"]),
        format=s["format"],
        trusted_for_linking=bool(s["trusted_for_linking"]),
        encodes_demographics=bool(s["encodes_demographics"]),
        links_as=s.get("links_as"),
        source=cited(s["source"]),
    )
