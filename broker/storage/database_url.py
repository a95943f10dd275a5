"""Reading a database URL (MRB_DATABASE_URL) without connecting: light enough for the
CLI's start-up paths, which import it lazily."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def masked_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The database file, when the URL names a SQLite file (not memory, not a URI)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name.startswith((":", "file:")):
        return None
    return Path(name)
