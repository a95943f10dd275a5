"""`mrb` starts without importing what the command does not use (issue #16: `mrb --help`
and `mrb token issue` in a fraction of a second). Each case runs the CLI in a fresh
interpreter and reads back which modules it had imported by the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs `mrb ARGS…` in-process, then writes its exit code and sys.modules to OUT.
PROBE = """
import json, sys
from broker.cli.main import app
code = 0
try:
    app(sys.argv[2:], prog_name="mrb")
except SystemExit as stopped:
    code = stopped.code or 0
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

# The API, Kafka, FHIR model, imaging and HL7 stacks: never for an admin command.
SERVER_STACKS = {"fastapi", "starlette", "uvicorn", "aiokafka", "pydicom", "pynetdicom", "hl7"}
# ... nor, for help, the database, migrations, HTTP client, logging set-up or YAML.
EVERYTHING = SERVER_STACKS | {
    "fhir",
    "fhir_core",
    "sqlalchemy",
    "alembic",
    "httpx",
    "structlog",
    "yaml",
    "pydantic_settings",
}


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MRB_")}
    return {**env, "MRB_DATA_DIR": str(data_dir), "COLUMNS": "200"}


def _mrb(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """(exit code, top-level packages imported) of `mrb ARGS…` in a new interpreter."""
    code, modules = _mrb_modules(tmp_path, *args)
    return code, {m.split(".")[0] for m in modules}


def _mrb_modules(tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    """(exit code, every module imported, dotted) of `mrb ARGS…` in a new interpreter."""
    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        env=_env(tmp_path / "data"),
        check=True,
        capture_output=True,
        timeout=120,
    )
    report = json.loads(out.read_text())
    return report["code"], set(report["modules"])


@pytest.mark.parametrize(
    "args",
    [["--help"], ["token", "--help"], ["token", "issue", "--help"], ["keys", "--help"]],
    ids=" ".join,
)
def test_help_imports_none_of_the_stacks(tmp_path: Path, args: list[str]) -> None:
    code, loaded = _mrb(tmp_path, *args)
    assert code == 0
    assert not loaded & EVERYTHING
    assert "asyncio" not in loaded  # imported by the commands that run an event loop


def test_adapter_help_imports_no_adapter_stack(tmp_path: Path) -> None:
    code, loaded = _mrb(tmp_path, "adapter", "dicom", "--help")
    assert code == 0
    assert not loaded & (EVERYTHING - {"httpx"})  # the FHIR poller's option default


ISSUE = ("-q", "token", "issue", "--role", "audit", "--subject", "probe", "--machine")


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, set[str]]:
    """(exit code, every module imported) of one `mrb token issue` in a data folder with
    the broker's keys and a migrated SQLite database. Made once for the module: the tests
    below read the same run (each used to set up a folder and run it again, 3.5 s)."""
    folder = tmp_path_factory.mktemp("broker-folder")
    for args in (["keys", "init"], ["db", "upgrade"]):
        subprocess.run(
            [sys.executable, "-m", "broker.cli", "-q", *args],
            env=_env(folder / "data"),
            check=True,
            capture_output=True,
            timeout=300,
        )
    return _mrb_modules(folder, *ISSUE, "--by", "test")


def test_token_issue_imports_no_server_stack(issued: tuple[int, set[str]]) -> None:
    code, modules = issued
    loaded = {m.split(".")[0] for m in modules}
    assert code == 0
    assert not loaded & SERVER_STACKS
    assert "sqlalchemy" in loaded  # it did record the token


def test_token_issue_imports_no_fhir_model(issued: tuple[int, set[str]]) -> None:
    code, modules = issued
    loaded = {m.split(".")[0] for m in modules}
    assert code == 0
    assert not loaded & {"fhir", "fhir_core"}


# What `mrb token issue` no longer loads (docs/performance.md, "Fifth round (CLI)"): the
# metrics and their WSGI server (the logging set-up is apart: broker/logging_setup.py),
# the `click` package (typer vendors its own), and the recognition rules (the ledger's
# storage imports them where a saving is booked).
NOT_FOR_ISSUING = {
    "prometheus_client",
    "wsgiref.simple_server",
    "http.server",
    "click",
    "broker.domain.recognition",
}


def test_token_issue_imports_no_metrics(issued: tuple[int, set[str]]) -> None:
    code, loaded = issued
    assert code == 0
    assert not loaded & NOT_FOR_ISSUING
    assert "broker.logging_setup" in loaded  # it did set up logging


def test_settings_import_no_ledger_rules() -> None:
    """broker.settings (every command that reads MRB_*) takes MRB_LEDGER_ON_*'s choices
    from broker.domain.safety_actions, without the ledger and the recognition rules."""
    listing = "import sys, broker.settings; print(' '.join(sys.modules))"
    run = subprocess.run(
        [sys.executable, "-c", listing], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = set(run.stdout.split())
    assert "broker.domain.safety_actions" in loaded
    assert not loaded & {"broker.domain.ledger", "broker.domain.recognition"}
