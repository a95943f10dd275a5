"""Logging set-up for every mrb process (the Prometheus metrics are in
broker/observability.py, which re-exports `configure_logging`).

Apart from the metrics, so that an admin command (`mrb token issue`) sets up its logging
without loading prometheus_client and a WSGI server (docs/performance.md, "Fifth round
(CLI)").
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING, Any

import structlog

from broker.instance import INSTALLATION_ID_FILE

if TYPE_CHECKING:
    from broker.settings import Settings


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream it was
    when logging was configured (a test harness or a daemoniser may swap and close it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        """Set by StreamHandler.__init__; ignored."""


def configure_logging(
    level: str = "INFO", *, settings: Settings | None = None, process: str | None = None
) -> None:
    """One logging design for every mrb process: JSON lines when not on a terminal (log
    shippers), readable lines on one; mrb's own records, structlog's and every library's
    go through the same renderer with the same base fields: timestamp (UTC ISO), level,
    logger, event, `process` (the mrb command: "up", "worker", "adapter hl7v2" ...), `pid`,
    `installation` (MRB_INSTALLATION_ID, when known) and whatever the context bound (a
    request's `request_id`, a CDS call's `hook_instance`; broker/correlation.py).

    Exceptions are logged as their type and stack, without their message: a database
    driver's error text can carry the statement's parameters (identifiers).
    """
    base = _BaseFields(process or _command(), _installation(settings))
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _exception_without_message,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.stdlib.ExtraAdder(),  # fields passed as `extra`, e.g. the access log's
                *_shared(base),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite and SQLAlchemy log every statement with its parameters at DEBUG/INFO:
    # the values a caller looked up (a resident ID in a FHIR id) would be in the log.
    quiet = ("aiokafka", "uvicorn.access", "httpx", "alembic", "aiosqlite", "sqlalchemy")
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*_shared(base), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _shared(base: _BaseFields) -> list[structlog.typing.Processor]:
    """What structlog's own records and every other library's get alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        base,
    ]


class _BaseFields:
    """Adds the fields every line of this process carries (explicit fields win)."""

    def __init__(self, process: str, installation: str | None) -> None:
        self._fields: dict[str, object] = {"process": process, "pid": os.getpid()}
        if installation:
            self._fields["installation"] = installation

    def __call__(
        self, logger: object, name: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict


def _command() -> str:
    """The mrb command running ("worker", "adapter hl7v2"): command names only, never
    its arguments (a file name may name a patient)."""
    # typer 0.29 vendors click: its context, not the `click` package's (never set here).
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return "mrb"
    words = ctx.command_path.split()[1:]
    return " ".join(words) or "mrb"


def _installation(settings: Settings | None) -> str | None:
    """MRB_INSTALLATION_ID, else the data folder's installation-id file if there is one
    (never made here: only the processes that own the folder make it)."""
    if settings is None:
        return None
    if settings.installation_id:
        return settings.installation_id
    try:
        text = (settings.data_dir / INSTALLATION_ID_FILE).read_text().strip()
    except OSError:
        return None
    return text if _SAFE_ID.fullmatch(text) else None


_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _exception_without_message(
    logger: object, name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`exception`: the exception's type, its causes' types and the stack, not the text."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return event_dict
    _, exc, tb = exc_info
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(type(seen).__qualname__)
        seen = seen.__cause__ or seen.__context__
    stack = "".join(traceback.format_tb(tb)) if tb is not None else ""
    event_dict["exception"] = f"{' <- '.join(chain)} (message not logged)\n{stack}".rstrip()
    return event_dict
