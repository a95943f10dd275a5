"""Key files in the data dir: created once, never committed, readable by the owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class MissingKey(RuntimeError):
    """A key file is missing and may not be created here."""


def load_key(path: Path, *, size: int = 32, create: bool = True) -> bytes:
    """The key at `path`; without `create`, a missing file is an error naming the fix."""
    if not path.exists() and not create:
        raise MissingKey(
            f"key file {path} is missing: run `mrb keys init` once and give every API and "
            "worker process the same MRB_DATA_DIR/keys (or set MRB_CREATE_KEYS=true)"
        )
    return load_or_create_key(path, size=size)


def load_or_create_key(path: Path, *, size: int = 32) -> bytes:
    """Return the key stored at `path`, creating it with `size` random bytes if missing."""
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) != size:
            raise ValueError(f"{path} holds {len(key)} bytes, expected {size}")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(size)
    # O_EXCL: two processes starting together must not each write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_key(path, size=size)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key
