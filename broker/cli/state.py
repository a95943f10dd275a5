"""What an admin command acts on, said aloud, and refused when it is not there.

Only `mrb db upgrade`, `mrb keys init|rotate`, `mrb up`, `mrb demo` (and `mrb serve` /
`mrb worker`, which migrate on start) create the broker's database or keys. Every other
admin command checks first that the data folder, the database (at the current migration)
and the keys it needs exist, and stops with one line naming what is missing and the fix:
pointed at the wrong folder, it creates nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from broker.settings import Settings
from broker.storage.database import DatabaseError, current_heads, expected_heads
from broker.storage.database_url import masked_url, sqlite_file

err = Console(stderr=True, soft_wrap=True, highlight=False)

# `mrb --quiet` for this invocation (set by the app's callback); MRB_QUIET=1 does the same.
_quiet = False


class StateMissing(Exception):
    """The data folder, database or keys a command needs are not there (exit 2)."""


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def database_label(settings: Settings) -> str:
    """The database URL with any password masked, and its schema if one is set."""
    url = masked_url(settings.resolved_database_url)
    schema = f" (schema {settings.database_schema})" if settings.database_schema else ""
    return url + schema


def announce(settings: Settings) -> None:
    """One line on stderr: the data folder and database this command acts on."""
    if _quiet or settings.quiet:
        return
    folder = escape(str(settings.data_dir.resolve()))
    err.print(f"mrb: data folder {folder}, database {escape(database_label(settings))}")


def sqlite_path(settings: Settings) -> Path | None:
    """The database file, when the database is a SQLite file."""
    return sqlite_file(settings.resolved_database_url)


def require_folder(settings: Settings) -> None:
    if not settings.data_dir.is_dir():
        raise StateMissing(
            f"the data folder {settings.data_dir.resolve()} does not exist: set MRB_DATA_DIR "
            "to the broker's folder, or create its keys and database there first with "
            "`mrb keys init` and `mrb db upgrade`"
        )


def require_keys(settings: Settings) -> None:
    """The keys every broker process loads: the pseudonym key and a payload key."""
    keys = settings.keys_dir
    if not (keys / "pseudonym.key").exists() or not any(keys.glob("payload-*.key")):
        raise StateMissing(
            f"no broker keys in {keys.resolve()}: run `mrb keys init` there once (or set "
            "MRB_DATA_DIR to the folder that holds them)"
        )


async def require_database(settings: Settings) -> None:
    """The database exists and is at the current migration; nothing is created."""
    label = database_label(settings)
    path = sqlite_path(settings)
    if path is not None and not path.is_file():
        raise StateMissing(
            f"no database at {path}: run `mrb db upgrade` first (or set MRB_DATA_DIR / "
            "MRB_DATABASE_URL to the broker's database)"
        )
    expected = expected_heads(settings.resolved_database_url)
    try:
        current = await current_heads(settings.resolved_database_url, settings.database_schema)
    except (DatabaseError, OSError) as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        raise StateMissing(f"cannot open the database {label}: {cause}") from None
    if not current:
        raise StateMissing(f"the database {label} has no mrb schema: run `mrb db upgrade`")
    if current != expected:
        raise StateMissing(
            f"the database {label} is at migration {', '.join(sorted(current))}, this mrb "
            f"needs {', '.join(sorted(expected))}: run `mrb db upgrade`"
        )


async def require_state(settings: Settings, *, keys: bool) -> None:
    """The data folder (when the keys or a SQLite file live there), database, keys."""
    path = sqlite_path(settings)
    in_folder = path is not None and path.resolve().is_relative_to(settings.data_dir.resolve())
    if keys or in_folder:
        require_folder(settings)
    await require_database(settings)
    if keys:
        require_keys(settings)


def check_state(settings: Settings, *, keys: bool) -> None:
    """`require_state` from synchronous code."""
    asyncio.run(require_state(settings, keys=keys))
