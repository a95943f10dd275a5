"""Child processes of the bench: mrb commands, the API server, the load generator.

CPU time and memory are read from /proc (Linux): a process's own user + system time,
and its resident set size, sampled while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MRB = [sys.executable, "-m", "broker.cli"]
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def mrb(args: list[str], env: Mapping[str, str], *, timeout: float = 3600) -> str:
    """Run one mrb command to the end; its stdout (raises with its stderr on failure)."""
    done = subprocess.run(
        [*MRB, *args], env=dict(env), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"mrb {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def has_option(command: list[str], option: str, env: Mapping[str, str]) -> bool:
    """Whether `mrb <command> --help` lists `option` (options other work may add)."""
    return option in mrb([*command, "--help"], {**env, "COLUMNS": "200"})


@dataclass
class Child:
    """A long-running child process (its own process group, stopped with SIGTERM)."""

    proc: subprocess.Popen[bytes]
    log: Path
    rss_samples: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds of the process and of any children it forked (mrb --processes)."""
        return sum(cpu_seconds(p) for p in self.pids())

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.pids())

    def pids(self) -> list[int]:
        found = [self.pid]
        with contextlib.suppress(FileNotFoundError):
            kids = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
            found += [int(k) for k in kids]
        return [p for p in found if Path(f"/proc/{p}").exists()]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"child exited with {self.proc.returncode}; see {self.log}")

    async def sample_rss(self, stop: asyncio.Event, every: float = 0.2) -> None:
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self.rss_samples.append(self.rss())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)


def _spawn(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def child(argv: list[str], env: Mapping[str, str], log: Path) -> AsyncIterator[Child]:
    """A child process for the duration of the block (its group stopped on exit)."""
    proc = await asyncio.to_thread(_spawn, argv, env, log)
    c = Child(proc, log)
    try:
        yield c
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)


async def wait_http(url: str, c: Child, *, timeout: float = 120) -> None:
    """Until `url` answers 200 (the child is ready), failing early if the child dies."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            c.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s; see {c.log}")
