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
    key = secrets.token_bytes(size)
    if not create_private_file(path, key.hex() + "\n"):
        return load_or_create_key(path, size=size)
    return key


def create_private_file(path: Path, text: str) -> bool:
    """Write `text` to a new owner-only file at `path`; False (and nothing written) if the
    file exists already.

    Written whole to a private temporary file, then linked into place: a process that
    loses the race reads the winner's complete file, never a half-written one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def replace_private_file(path: Path, text: str) -> None:
    """Replace the file at `path` with `text`, owner-only, in one step (readers see the old
    file or the new one, never a mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
