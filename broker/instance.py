"""What one mrb process owns, and proof that it owns it before it touches anything.

- The data folder: an exclusive lock on MRB_DATA_DIR/.lock (fcntl.flock), held for the
  process's life, with the holder's pid and command written in it so that a second
  process can say who is in its way. The kernel drops the lock when the process ends,
  however it ends (even SIGKILL): there is nothing stale to clean up.
- Its listening ports: bound (and listening) before anything starts, then handed to the
  server that uses them, so no other process can take them in between. A port in use is
  one line naming the setting or flag to change.
- Which listener on a port is whose: read from /proc on Linux, so the embedded broker is
  "ready" only when its own child process is the one listening.
- The installation id, which keeps the ingest consumer groups of different installations
  on one Kafka apart.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.settings import Settings

LOCK_FILE = ".lock"
INSTALLATION_ID_FILE = "installation-id"
INSTALLATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Short admin commands wait this long for a running one to finish before giving up.
ADMIN_LOCK_WAIT_SECONDS = 5.0


class Refused(Exception):
    """A process must not start: the operator gets this one line and exit code 2."""


@dataclass(frozen=True)
class Holder:
    """Who holds a data folder, as written in its lock file."""

    pid: int | None
    command: str
    since: str

    def __str__(self) -> str:
        if self.pid is None:
            return "another process (it has not written its pid yet)"
        since = f", since {self.since}" if self.since else ""
        return f"pid {self.pid} ({self.command}{since})"


class DataDirInUse(Refused):
    def __init__(self, folder: Path, holder: Holder) -> None:
        self.folder = folder
        self.holder = holder
        super().__init__(
            f"the data folder {folder} is in use by {holder}: stop that process first, or "
            "set MRB_DATA_DIR to another folder"
        )


class DataDirLock:
    """An exclusive lock on a data folder; release() or process exit frees it."""

    def __init__(self, folder: Path, command: str) -> None:
        self.folder = folder
        self.command = command
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_FILE

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: float = 0.0) -> DataDirLock:
        """Take the lock, waiting up to `wait` seconds; DataDirInUse names the holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # Opened without O_TRUNC: the holder's pid stays readable until we hold the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise DataDirInUse(self.folder, holder) from None
                time.sleep(0.1)
        record = {
            "pid": os.getpid(),
            "command": self.command,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale pid for the next reader
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> DataDirLock:
        return self if self.held else self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_holder(fd: int) -> Holder:
    # The holder writes its record right after taking the lock: give it a moment.
    for _ in range(10):
        raw = os.pread(fd, 4096, 0)
        if raw.strip():
            try:
                data = json.loads(raw)
                return Holder(int(data["pid"]), str(data["command"]), str(data.get("since", "")))
            except (ValueError, KeyError, TypeError):
                return Holder(None, "unknown", "")
        time.sleep(0.05)
    return Holder(None, "unknown", "")


def lock_data_dir(folder: Path, command: str, *, wait: float = 0.0) -> DataDirLock:
    return DataDirLock(folder, command).acquire(wait=wait)


def sqlite_file_in(settings: Settings) -> bool:
    """Is the database a SQLite file inside the data folder?"""
    from broker.storage.database_url import sqlite_file  # SQLAlchemy: only when asked

    path = sqlite_file(settings.resolved_database_url)
    return path is not None and path.resolve().is_relative_to(settings.data_dir.resolve())


def writes_data_dir(settings: Settings, *, embedded_kafka: bool) -> bool:
    """Does a broker process with these settings write its data folder?

    It does when its database is a SQLite file there, when it may create the broker's
    keys there (the embedded set-up), or when it runs the embedded broker (tansu.log).
    API hosts and workers on PostgreSQL only read their keys: many may share a folder.
    """
    return embedded_kafka or settings.may_create_keys or sqlite_file_in(settings)


# --- ports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """An address a process listens on, and what the operator changes when it is busy."""

    host: str
    port: int
    setting: str  # "MRB_HTTP_PORT", "--listen", …

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class PortInUse(Refused, OSError):
    def __init__(self, listener: Listener, reason: str) -> None:
        self.listener = listener
        super().__init__(
            errno.EADDRINUSE,
            f"cannot listen on {listener.address}: {reason}; set {listener.setting} to "
            "another port",
        )

    def __str__(self) -> str:
        return str(self.strerror)


def listen_socket(listener: Listener, *, backlog: int = 128) -> socket.socket:
    """A socket bound to the listener's address and listening, for a server to take over.

    Raises PortInUse (an OSError) naming the setting to change, and the process in the way
    when it can be found.
    """
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As servers do: a port whose last connections are in TIME_WAIT is free, one with
        # a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener.host, listener.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            holders = [describe_process(pid) for pid in sorted(listening_pids(listener.port))]
            reason = "in use by " + ", ".join(holders) if holders else "already in use"
        else:
            reason = exc.strerror or str(exc)
        raise PortInUse(listener, reason) from None
    return sock


def ensure_free(listener: Listener) -> None:
    """Bind and release: for servers that bind their port themselves (tansu, DICOM)."""
    listen_socket(listener).close()


def listening_pids(port: int) -> set[int]:
    """The processes with a TCP socket listening on `port` (any address), as far as /proc
    shows them (Linux; only processes this user may inspect). Empty when none is found."""
    inodes = _listening_inodes(port)
    if not inodes:
        return set()
    pids: set[int] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _holds_any(int(entry.name), inodes):
                pids.add(int(entry.name))
    return pids


def process_listens(pid: int, port: int) -> bool | None:
    """Is process `pid` itself listening on `port`? None when /proc cannot tell (not Linux)."""
    if not Path("/proc/net/tcp").exists():
        return None
    inodes = _listening_inodes(port)
    return bool(inodes) and _holds_any(pid, inodes)


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXADDR:HEXPORT; state 0A is LISTEN; the inode is field 9.
            listening = len(fields) > 9 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _holds_any(pid: int, inodes: set[str]) -> bool:
    wanted = {f"socket:[{i}]" for i in inodes}
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for fd in fds:
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        return True
    except OSError:
        return False
    return False


def describe_process(pid: int) -> str:
    """`pid 123 (python -m broker.cli up)`: the command line, shortened."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [a.decode(errors="replace") for a in argv if a]
    except OSError:
        words = []
    if not words:
        return f"pid {pid}"
    words[0] = os.path.basename(words[0])
    command = " ".join(" ".join(words).split())  # one line, whatever the arguments hold
    return f"pid {pid} ({command[:77] + '...' if len(command) > 80 else command})"


# --- installation id ------------------------------------------------------------------


class InstallationIdMissing(Refused):
    pass


def valid_installation_id(value: str) -> str:
    if not INSTALLATION_ID_PATTERN.match(value):
        raise ValueError(
            "MRB_INSTALLATION_ID must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def installation_id(settings: Settings) -> str:
    """This installation's id: MRB_INSTALLATION_ID, else MRB_DATA_DIR/installation-id.

    The file is made once (random) where the broker may make its own keys (the embedded
    set-up, SQLite), so every process on one folder agrees. Elsewhere it must be given:
    workers on several hosts have to share it, and a per-host default would split them
    into separate consumer groups that each read every message.
    """
    if settings.installation_id:
        return settings.installation_id
    path = settings.data_dir / INSTALLATION_ID_FILE
    existing = _read_id(path)
    if existing is not None:
        return existing
    if not settings.may_create_keys:
        raise InstallationIdMissing(
            f"no installation id: set MRB_INSTALLATION_ID (the same value on every worker "
            f"of this installation, e.g. the site's name) or write it to {path}"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    candidate = path.with_name(f".{INSTALLATION_ID_FILE}.{os.getpid()}")
    candidate.write_text(uuid.uuid4().hex[:16] + "\n")
    try:
        os.link(candidate, path)  # atomic: of two processes starting at once, one wins
    except FileExistsError:
        pass
    finally:
        candidate.unlink()
    made = _read_id(path)
    if made is None:  # pragma: no cover - written just above
        raise InstallationIdMissing(f"{path} could not be read back")
    return made


def _read_id(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return valid_installation_id(value)
    except ValueError as exc:
        raise InstallationIdMissing(f"{path}: {exc}") from None
