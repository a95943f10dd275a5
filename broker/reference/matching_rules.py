"""Load the patient-matching rules (schemas/identity/matching.yaml), checked against their
JSON Schema and against what the comparators of broker/domain/matching.py can return."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from broker.domain.matching import (
    Decision,
    FieldRule,
    HardRule,
    Level,
    MatchingRules,
    validate_rules,
)
from broker.reference.loader import ReferenceDataError, _read, default_schemas_dir


def load_matching_rules(schemas: Path) -> MatchingRules:
    """The rules in `schemas`/identity/matching.yaml; ReferenceDataError says what is wrong."""
    base = schemas / "identity"
    path = base / "matching.yaml"
    doc = _read(path, base / "matching.schema.json")
    if not isinstance(doc, dict):
        raise ReferenceDataError(f"{path}: expected a mapping")
    elsewhere = [n for n, f in doc["fields"].items() if n != "name" and "surname_readings" in f]
    if elsewhere:
        raise ReferenceDataError(f"{path}: surname_readings belong to name, not {elsewhere}")
    readings = doc["fields"].get("name", {}).get("surname_readings", {}).get("value", {})
    rules = MatchingRules(
        version=str(doc["rules_version"]),
        blocking=tuple(str(k["key"]) for k in doc["blocking"]["keys"]),
        max_block_size=int(doc["blocking"]["max_block_size"]["value"]),
        fields={name: _field(name, f) for name, f in doc["fields"].items()},
        match_threshold=float(doc["thresholds"]["match"]["value"]),
        possible_threshold=float(doc["thresholds"]["possible_match"]["value"]),
        hard_rules=tuple(_hard_rule(h) for h in doc["hard_rules"]),
        surname_readings={str(c): tuple(r) for c, r in readings.items()},
    )
    problems = validate_rules(rules)
    if problems:
        raise ReferenceDataError(f"{path}: {'; '.join(problems)}")
    return rules


@functools.cache
def shipped_matching_rules() -> MatchingRules:
    """The rules shipped in schemas/, loaded once per process."""
    return load_matching_rules(default_schemas_dir())


def _field(name: str, f: dict[str, Any]) -> FieldRule:
    levels = {lv: Level(lv, float(v["m"]), float(v["u"])) for lv, v in f["levels"].items()}
    params = {p: float(v["value"]) for p, v in (f.get("parameters") or {}).items()}
    return FieldRule(name, levels, params)


def _hard_rule(h: dict[str, Any]) -> HardRule:
    return HardRule(
        name=str(h["name"]),
        when={fld: frozenset(levels) for fld, levels in h["when"].items()},
        decision=Decision(h["decision"]) if "decision" in h else None,
        cap=Decision(h["cap"]) if "cap" in h else None,
    )
