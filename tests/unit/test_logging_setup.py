"""broker/logging_setup.py: the `process` field of every log line names the mrb command
running ("token issue", "worker"), read from typer's own context (typer 0.29 vendors
click, so the `click` package's current context is never set by an mrb command); and
stdlib and structlog records share one format."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from broker.logging_setup import _command


def _cli(seen: list[str]) -> typer.Typer:
    app = typer.Typer()
    token = typer.Typer()

    @token.command("issue")
    def issue() -> None:
        seen.append(_command())

    @token.command("list")
    def list_() -> None:
        """Unused: a group of two commands, as mrb's."""

    app.add_typer(token, name="token")

    @app.command("worker")
    def worker() -> None:
        seen.append(_command())

    return app


def test_process_is_the_command_running() -> None:
    seen: list[str] = []
    app = _cli(seen)
    app(["token", "issue"], prog_name="mrb", standalone_mode=False)
    app(["worker"], prog_name="mrb", standalone_mode=False)
    assert seen == ["token issue", "worker"]


def test_process_outside_a_command_is_mrb() -> None:
    assert _command() == "mrb"


# In a fresh interpreter: configure_logging, then a stdlib record, then structlog used.
LATE_STRUCTLOG = """
import json, logging, sys
from broker.logging_setup import configure_logging
configure_logging("INFO", process="probe")
logging.getLogger("broker.test").warning("stdlib %s", "record", extra={"n": 1})
import structlog
structlog.get_logger("broker.test").warning("from structlog", n=2)
try:
    raise ValueError("110105194912310021")
except ValueError:
    logging.getLogger("broker.test").exception("failed")
print(json.dumps({"done": True}))
"""


def test_stdlib_and_structlog_records_share_the_format() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LATE_STRUCTLOG],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(run.stdout) == {"done": True}  # nothing else on stdout
    stdlib, native, failed = (json.loads(line) for line in run.stderr.splitlines())
    for line in (stdlib, native, failed):
        assert line["process"] == "probe" and line["logger"] == "broker.test"
        assert line["level"] in {"warning", "error"} and line["timestamp"].endswith("Z")
    assert (stdlib["event"], stdlib["n"]) == ("stdlib record", 1)
    assert (native["event"], native["n"]) == ("from structlog", 2)
    assert failed["exception"].startswith("ValueError (message not logged)")
    assert "110105194912310021" not in run.stderr
