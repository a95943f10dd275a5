"""Correlation ids, the base fields of every log line, and the audit hash with request ids."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from broker.correlation import (
    bind_hook_instance,
    current_request_id,
    request_scope,
    safe_id,
)
from broker.domain.audit_chain import FIELDS, GENESIS, entry_hash
from broker.settings import Settings
from tests.logcapture import json_logs

ENTRY: dict[str, Any] = {
    "id": 7,
    "at": datetime(2026, 5, 20, 1, 0, tzinfo=UTC),
    "actor": "dr.li",
    "role": "doctor",
    "hospital_id": "H002",
    "action": "recognition-check",
    "purpose": "TREAT",
    "patient_pseudonym": "ab" * 32,
    "person_id": None,
    "detail": {"items": 2},
}


def hash_before_request_ids(entry: dict[str, Any], seq: int, prev: str) -> str:
    """entry_hash as it was when the entries already in databases were sealed."""
    plain = [v.isoformat() if hasattr(v, "isoformat") else v for v in (entry[f] for f in FIELDS)]
    text = json.dumps([seq, prev, *plain], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_entries_without_a_request_id_keep_the_hash_they_were_sealed_with() -> None:
    old = hash_before_request_ids(ENTRY, 1, GENESIS)
    assert entry_hash(ENTRY, 1, GENESIS) == old
    assert entry_hash(ENTRY | {"request_id": None}, 1, GENESIS) == old


def test_a_request_id_is_part_of_the_hash() -> None:
    with_id = entry_hash(ENTRY | {"request_id": "req-1"}, 1, GENESIS)
    assert with_id != entry_hash(ENTRY, 1, GENESIS)
    assert with_id != entry_hash(ENTRY | {"request_id": "req-2"}, 1, GENESIS)


def test_only_short_plain_ids_are_kept() -> None:
    assert safe_id("0b6f1c2e-7d1a-4f7e-9c1d-3a2b1c0d9e8f") is not None
    assert safe_id("req.1:a_b-c") == "req.1:a_b-c"
    assert safe_id("req-1234567890") == "req-1234567890"  # ten digits in a row: kept
    for bad in (
        *("", "a" * 129, "has space", "x;y", "名字", None),
        *("11010519491231002X", "req-110105194912310021", "13800138000"),  # looks like one
    ):
        assert safe_id(bad) is None, bad


def test_a_request_scope_binds_its_id_and_leaves_nothing_behind() -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(outer="kept")
    with request_scope("req-1"):
        bind_hook_instance("d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
        bind_hook_instance("not a plain id")  # ignored
        assert current_request_id() == "req-1"
        assert structlog.contextvars.get_contextvars()["hook_instance"].startswith("d1577c69")
    assert structlog.contextvars.get_contextvars() == {"outer": "kept"}
    assert current_request_id() is None
    structlog.contextvars.clear_contextvars()


def test_every_line_has_the_base_fields_and_exceptions_lose_their_message(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, installation_id="site-a")
    with json_logs(settings=settings, process="worker") as logs:
        with request_scope("req-9"):
            logging.getLogger("broker.test").info("stdlib", extra={"n": 1})
            structlog.get_logger("broker.test").warning("structlog", n=2)
            logging.getLogger("somelibrary").warning("a library's record")
        resident_id, mrn = "110105194912310021", "MRN-1"  # the stack shows code, not values
        try:
            raise ValueError(f"{resident_id} not found") from KeyError(mrn)
        except ValueError:
            logging.getLogger("broker.test").exception("failed")
    stdlib, native, library, failed = logs.lines
    for line in logs.lines:
        assert line["process"] == "worker" and line["installation"] == "site-a"
        assert isinstance(line["pid"], int)
        assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
        assert {"level", "logger", "event"} <= line.keys()
    assert (stdlib["event"], stdlib["n"], stdlib["request_id"]) == ("stdlib", 1, "req-9")
    assert (native["event"], native["n"], native["level"]) == ("structlog", 2, "warning")
    assert library["logger"] == "somelibrary" and library["request_id"] == "req-9"
    assert "request_id" not in failed
    assert failed["exception"].startswith("ValueError <- KeyError (message not logged)")
    assert "110105194912310021" not in json.dumps(failed) and "MRN-1" not in json.dumps(failed)


def test_the_installation_id_comes_from_the_data_folder_when_not_set(tmp_path: Path) -> None:
    (tmp_path / "installation-id").write_text("0123abcd\n")
    with json_logs(settings=Settings(data_dir=tmp_path)) as logs:
        logging.getLogger("broker.test").info("x")
    assert logs.lines[0]["installation"] == "0123abcd"
    with json_logs(settings=Settings(data_dir=tmp_path / "none")) as logs:
        logging.getLogger("broker.test").info("x")
    assert "installation" not in logs.lines[0]  # never made by logging
    assert not (tmp_path / "none").exists()
