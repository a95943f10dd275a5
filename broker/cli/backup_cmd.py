"""`mrb backup DEST` and `mrb restore SRC`: the database only, never the keys.

The backup runs beside a running instance (SQLite's online backup, or pg_dump's snapshot).
The restore replaces the database: it holds the data folder's lock (no `mrb up`, `serve`
or `worker` on that folder meanwhile), refuses a database holding data unless --force,
and runs the migrations afterwards, so a backup from an older version comes back
upgraded. The restore cannot be audited in the database it replaces: it is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from broker.instance import ADMIN_LOCK_WAIT_SECONDS, Refused, lock_data_dir
from broker.logging_setup import configure_logging
from broker.security.keys import MissingKey
from broker.security.payload_cipher import PayloadCipher, key_order
from broker.settings import Settings
from broker.storage.backup import (
    BackupError,
    Database,
    Refusal,
    backup_kind,
    holds_data,
    payload_keys_needed,
)
from broker.storage.backup import backup as backup_database
from broker.storage.backup import restore as restore_database
from broker.storage.database import upgrade
from broker.storage.retention import PURGED

logger = logging.getLogger("broker.backup")
console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _database() -> tuple[Settings, Database]:
    settings = Settings()
    configure_logging(settings.log_level)
    return settings, Database(settings.resolved_database_url, settings.database_schema)


def _fail(exc: BackupError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2 if isinstance(exc, Refusal) else 1)


def backup(
    dest: Annotated[Path, typer.Argument(help="A new file to write the backup to.")],
) -> None:
    """Back up the database (not the keys) to DEST, while mrb keeps running: SQLite's
    online backup, or pg_dump --format=custom of MRB_DATABASE_SCHEMA. Prints the keys the
    backup needs: back up MRB_DATA_DIR/keys separately."""
    settings, db = _database()
    console.print(f"backing up {db.describe()} to {dest}")
    try:
        backup_database(db, dest)
    except BackupError as exc:
        raise _fail(exc) from None
    console.print(f"backup written: {dest} ({dest.stat().st_size} bytes)")
    copy = Database(f"sqlite+aiosqlite:///{dest.resolve()}") if db.sqlite else db
    try:
        used: Counter[str] | None = asyncio.run(payload_keys_needed(copy))
    except Exception as exc:  # an older schema: the backup itself is fine
        logger.warning("could not count the payload keys the backup needs: %r", exc)
        used = None
    console.print(
        f"it holds no key: reading it needs this installation's {settings.keys_dir} "
        "(pseudonym.key, fhir-cursor.key, the token issuer, receipt and audit keys) and "
        "these payload keys:"
    )
    if used is None:
        console.print("  (could not count them here: run `mrb keys usage` on the database)")
    for kid in sorted((k for k in used or () if used and used[k] and k != PURGED), key=key_order):
        console.print(f"  payload-{kid}.key: {used[kid] if used else 0} rows")
    console.print(
        "back up the keys separately, offline, by two people (docs/operations.md, "
        '"Backup and restore")'
    )


def restore(
    source: Annotated[Path, typer.Argument(help="A file written by `mrb backup`.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a database that holds data (back it up first)."),
    ] = False,
) -> None:
    """Replace the database with a backup, then migrate it to this version's schema.

    Holds the data folder's lock; stop every API, worker and the audit sealer using this
    database first. Refuses a database that holds data unless --force."""
    settings, db = _database()
    try:
        lock = lock_data_dir(settings.data_dir, "mrb restore", wait=ADMIN_LOCK_WAIT_SECONDS)
    except Refused as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        console.print(f"restoring {source} into {db.describe()}")
        asyncio.run(_restore(settings, db, source, force))
    except BackupError as exc:
        raise _fail(exc) from None
    finally:
        lock.release()


async def _restore(settings: Settings, db: Database, source: Path, force: bool) -> None:
    backup_kind(source)  # a wrong file is refused before anything is looked at
    if not force and await holds_data(db):
        raise Refusal(
            f"{db.describe()} holds data: restoring would replace it; back it up, then give --force"
        )
    await restore_database(db, source)
    await upgrade(db.url, db.schema)
    logger.warning(
        "%s restored from the backup %s: audit entries made after the backup are not in "
        "it, and the audit sealer stops until its export is moved aside (docs/operations.md)",
        db.describe(),
        source,
    )
    console.print(f"restored {source} and migrated it to the latest schema")
    try:
        have = set(PayloadCipher.from_dir(settings.keys_dir, create=False).key_ids)
    except MissingKey:
        have = set()
    needed = await payload_keys_needed(db)
    missing = sorted(k for k, n in needed.items() if n and k not in have and k != PURGED)
    if missing:
        err.print(
            "[yellow]warning:[/yellow] the restored data is sealed with payload key(s) "
            f"{', '.join(missing)}, which {settings.keys_dir} does not hold: restore the "
            "keys backed up with it"
        )
