"""Capture log records as mrb's JSON renderer writes them (configure_logging), parsed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from broker.observability import configure_logging
from broker.settings import Settings


class JsonLines(logging.Handler):
    """Each record rendered by the root handler's formatter, as a dict."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def where(self, **fields: Any) -> list[dict[str, Any]]:
        return [x for x in self.lines if all(x.get(k) == v for k, v in fields.items())]


@contextmanager
def json_logs(
    level: str = "INFO", *, settings: Settings | None = None, process: str = "test"
) -> Iterator[JsonLines]:
    """configure_logging for the block (JSON whatever the terminal), then as it was."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    saved_levels = [(lg, lg.level) for lg in loggers]
    configure_logging(level, settings=settings, process=process)
    handler = JsonLines(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for lg, lvl in saved_levels:
            lg.setLevel(lvl)
