"""Own state only (issue 14): a process touches nothing before its data folder and ports
are its own, its embedded broker is its own child, its consumer group is its
installation's, and Ctrl-C / SIGTERM stop it in order without error output.

Real processes throughout: `mrb up`, `mrb demo`, `mrb worker` as subprocesses; Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from adapters.common.publisher import Publisher
from broker.bootstrap import Container
from broker.cli import main as cli
from broker.instance import LOCK_FILE, Listener, listen_socket, lock_data_dir
from broker.kafka.embedded import EmbeddedBrokerError, EmbeddedKafka
from broker.runtime import running_stack, wait_for_failure_or_stop
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.database import upgrade
from broker.storage.tables import result
from tests import factories as f
from tests.conftest import free_port, running_worker

# Lines that must never reach an operator's terminal on a clean start or stop.
NOISE = ("Traceback", '"level": "error"', "aiokafka", "Unclosed", "KafkaConnectionError")


@dataclass
class Ports:
    http: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    kafka: int = field(default_factory=free_port)


def mrb_env(data: Path, ports: Ports, **more: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MRB_DATA_DIR": str(data),
        "MRB_HTTP_PORT": str(ports.http),
        "MRB_METRICS_PORT": str(ports.metrics),
        "MRB_EMBEDDED_KAFKA_PORT": str(ports.kafka),
        "COLUMNS": "300",
        **more,
    }
    for inherited in ("MRB_KAFKA_BOOTSTRAP", "MRB_DATABASE_URL", "MRB_INSTALLATION_ID"):
        if inherited not in more:
            env.pop(inherited, None)
    return env


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")


async def start(args: list[str], env: dict[str, str], logs: Path) -> Running:
    """`mrb ARGS` in its own process group, as a terminal runs a foreground command."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout", logs / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "broker.cli",
            *args,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return Running(proc, out, err)


async def run(args: list[str], env: dict[str, str], logs: Path, timeout: float = 30) -> Running:
    """`mrb ARGS` to its end (killed, and the test failed, if it does not end in time)."""
    running = await start(args, env, logs)
    try:
        await asyncio.wait_for(running.proc.wait(), timeout)
    except TimeoutError:
        os.killpg(running.pid, signal.SIGKILL)
        await running.proc.wait()
        pytest.fail(f"mrb {' '.join(args)} did not stop within {timeout}s: {running.stderr()}")
    return running


async def ready(url: str, running: Running, timeout: float = 60) -> dict[str, Any]:
    """Wait until /readyz answers 200 with Kafka reachable; the body."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while asyncio.get_running_loop().time() < deadline:
            if running.proc.returncode is not None:
                pytest.fail(f"exited with {running.proc.returncode}: {running.stderr()}")
            try:
                answer = await client.get(f"{url}/readyz")
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                workers = [v for k, v in body["checks"].items() if k.startswith("ingest_worker")]
                if workers and all(w["kafka"] == "ok" for w in workers):
                    return body
            await asyncio.sleep(0.2)
    pytest.fail(f"{url} not ready within {timeout}s: {running.stderr()}")


async def wait_for_text(running: Running, text: str, timeout: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in running.stdout():
        if running.proc.returncode is not None:
            pytest.fail(f"exited with {running.proc.returncode}: {running.stderr()}")
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"no {text!r} within {timeout}s: {running.stdout()[-2000:]}")
        await asyncio.sleep(0.2)


async def stop(running: Running, how: signal.Signals, *, group: bool) -> int:
    """Ctrl-C in a terminal signals the whole foreground process group; systemd and
    Kubernetes send SIGTERM to the process."""
    if group:
        os.killpg(running.pid, how)
    else:
        running.proc.send_signal(how)
    try:
        return await asyncio.wait_for(running.proc.wait(), 30)
    except TimeoutError:
        os.killpg(running.pid, signal.SIGKILL)
        await running.proc.wait()
        pytest.fail(f"did not stop on {how.name}: {running.stderr()[-3000:]}")


@asynccontextmanager
async def cleanup(*processes: Running) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for p in processes:
            if p.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.proc.wait()


def refusal(running: Running) -> str:
    """The one line a refused start prints; it must have printed nothing else there."""
    lines = [line for line in running.stderr().splitlines() if line.strip()]
    assert running.proc.returncode == 2, running.stderr()
    assert len(lines) == 1, lines
    assert "Traceback" not in running.stdout()
    return lines[0]


def clean(stderr: str) -> None:
    # The access log's lines are the test's own requests (a 503 /readyz while joining).
    lines = [
        line
        for line in stderr.splitlines()
        if '"logger": "broker.access"' not in line
        # A worker joining or leaving a shared group makes the others rebalance: expected.
        and "because it is rebalancing" not in line
    ]
    noisy = [line for line in lines if any(n in line for n in NOISE)]
    assert not noisy, noisy


def results_in(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("select count(*) from result").fetchone()[0])


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.slow
async def test_a_second_up_beside_a_running_one_changes_nothing_and_says_why(
    tmp_path: Path,
) -> None:
    data, ports = tmp_path / "var", Ports()
    first = await start(["up"], mrb_env(data, ports), tmp_path / "first")
    async with cleanup(first):
        await ready(f"http://127.0.0.1:{ports.http}", first)
        db = data / "mrb.db"
        before = db.stat()

        # The same folder, other ports: the folder's lock names the running process.
        same_folder = await run(["up"], mrb_env(data, Ports()), tmp_path / "2")
        line = refusal(same_folder)
        assert f"in use by pid {first.pid} (mrb up" in line and "MRB_DATA_DIR" in line

        # Another folder, one of the first's ports each time: nothing made in that folder
        # (no database, no keys) before the clash is found.
        for name, clash, setting in (
            ("http", Ports(http=ports.http), "MRB_HTTP_PORT"),
            ("metrics", Ports(metrics=ports.metrics), "MRB_METRICS_PORT"),
            ("kafka", Ports(kafka=ports.kafka), "MRB_EMBEDDED_KAFKA_PORT"),
        ):
            other = tmp_path / f"other-{name}"
            refused = await run(["up"], mrb_env(other, clash), tmp_path / name)
            line = refusal(refused)
            assert setting in line and "cannot listen on 127.0.0.1:" in line, line
            assert listing(other) <= {LOCK_FILE}

        # The first goes on as it was: same database file, still its lock, still serving.
        after = db.stat()
        assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)
        assert f'"pid": {first.pid}' in (data / LOCK_FILE).read_text()
        await ready(f"http://127.0.0.1:{ports.http}", first, timeout=10)

        # Ctrl-C: adapters, worker, broker stop in order; nothing on stderr but info lines.
        assert await stop(first, signal.SIGINT, group=True) == 0
    clean(first.stderr())
    for port in (ports.http, ports.metrics, ports.kafka):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.slow
async def test_a_second_demo_beside_a_running_one_keeps_its_database(tmp_path: Path) -> None:
    data, ports = tmp_path / "var", Ports()
    env = mrb_env(data, ports)
    first = await start(["demo", "--patients", "20"], env, tmp_path / "first")
    async with cleanup(first):
        await wait_for_text(first, "Serving on")
        db = data / "demo" / "mrb.db"
        inode, indexed = db.stat().st_ino, results_in(db)
        assert indexed > 0

        second = await run(["demo", "--patients", "20"], env, tmp_path / "second")
        line = refusal(second)
        assert f"{data / 'demo'} is in use by pid {first.pid} (mrb demo" in line

        assert db.stat().st_ino == inode and results_in(db) == indexed  # not recreated
        await ready(f"http://127.0.0.1:{ports.http}", first, timeout=10)
        assert await stop(first, signal.SIGINT, group=True) == 0
    clean(first.stderr())


@pytest.mark.slow
async def test_ctrl_c_while_the_demo_publishes_stops_without_errors(tmp_path: Path) -> None:
    data, ports = tmp_path / "var", Ports()
    demo = await start(["demo"], mrb_env(data, ports), tmp_path / "demo")
    async with cleanup(demo):
        await wait_for_text(demo, "Kafka: ")
        await asyncio.sleep(1)  # the adapters are sending, the worker indexing
        assert await stop(demo, signal.SIGINT, group=True) == 0
    clean(demo.stderr())
    assert "stopped before the sample was replayed" in demo.stdout()


@pytest.mark.slow
async def test_a_foreign_listener_on_the_kafka_port_stops_up(tmp_path: Path) -> None:
    squatter = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    ports = Ports(kafka=squatter.sockets[0].getsockname()[1])
    try:
        refused = await run(["up"], mrb_env(tmp_path / "var", ports), tmp_path / "up")
    finally:
        squatter.close()
        await squatter.wait_closed()
    line = refusal(refused)
    assert "MRB_EMBEDDED_KAFKA_PORT" in line and f"in use by pid {os.getpid()}" in line
    assert listing(tmp_path / "var") <= {LOCK_FILE}


@pytest.mark.slow
async def test_the_embedded_broker_is_never_another_ones(kafka: str) -> None:
    """The port already answers Kafka (another instance's Tansu): tansu of our own dies
    with address-in-use, and that must not pass for ready."""
    port = int(kafka.rsplit(":", 1)[1])
    ours = EmbeddedKafka(port)
    with pytest.raises(EmbeddedBrokerError, match="MRB_EMBEDDED_KAFKA_PORT") as refused:
        await ours.start(timeout=10)
    assert "tansu" in str(refused.value)
    assert not ours.running
    # The other instance's broker is untouched.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        assert "mrb.results.v1" in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_the_stack_fails_when_its_broker_dies(settings: Settings) -> None:
    async with running_stack(settings, api=False, worker=True, kafka_needed=True) as stack:
        assert stack.kafka is not None and stack.kafka._proc is not None
        stack.kafka._proc.kill()
        with pytest.raises(RuntimeError, match=r"embedded-kafka failed: .*tansu\) exited"):
            await asyncio.wait_for(wait_for_failure_or_stop(stack), 20)


async def installation(tmp_path: Path, name: str) -> Container:
    """One installation: its own data folder and SQLite database, H001 registered."""
    folder = tmp_path / name
    settings = Settings(
        data_dir=folder,
        database_url=f"sqlite+aiosqlite:///{folder / 'mrb.db'}",
        consumer_session_timeout_ms=2000,
        create_keys=True,
    )
    folder.mkdir()
    await upgrade(settings.resolved_database_url)
    container = Container.build(settings)
    async with container.sessions() as session, session.begin():
        await hospitals.add(session, hospitals.Hospital("H001", "H001", "510502", "3"))
        await hospitals.add_key(session, "H001", f.key_id("H001"), f.public_b64("H001"))
    return container


async def indexed(container: Container) -> int:
    async with container.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(result))).scalar_one())


@pytest.mark.slow
async def test_two_installations_on_one_kafka_keep_their_own_groups(
    tmp_path: Path, kafka: str
) -> None:
    """Same topics (as DESIGN.md fixes them), different consumer groups: each installation
    reads every message for itself instead of taking the other's partitions away."""
    a, b = await installation(tmp_path, "a"), await installation(tmp_path, "b")
    groups = {a.settings.consumer_group, b.settings.consumer_group}
    assert len(groups) == 2 and all(g.startswith("mrb-ingest-") for g in groups)
    messages = [
        f.outgoing(f.lab_bundle(accession=f"I{i}"), key=f"p{i}".encode()) for i in range(12)
    ]
    async with contextlib.AsyncExitStack() as running:
        await running.enter_async_context(running_worker(a, kafka))
        await running.enter_async_context(running_worker(b, kafka))
        async with Publisher(kafka) as publisher:
            await publisher.publish(messages)
        deadline = asyncio.get_running_loop().time() + 40
        while (await indexed(a), await indexed(b)) != (12, 12):
            assert asyncio.get_running_loop().time() < deadline, (
                await indexed(a),
                await indexed(b),
            )
            await asyncio.sleep(0.3)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:  # one group per request: Tansu answers a request for several wrongly
            members = {
                g: len((await admin.describe_consumer_groups([g]))[0].groups[0][5])
                for g in sorted(groups)
            }
        finally:
            await admin.close()
        assert members == dict.fromkeys(groups, 1)
    for c in (a, b):
        await c.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgres"], indirect=True)
async def test_two_workers_on_one_host_share_one_group(
    settings: Settings, kafka: str, tmp_path: Path
) -> None:
    """Workers of one installation on one host (PostgreSQL, one shared folder holding
    the keys): each its own health and metrics port, one consumer group."""
    common = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": settings.database_url or "",
        "MRB_DATABASE_SCHEMA": settings.database_schema or "",
        "MRB_KAFKA_BOOTSTRAP": kafka,
        "MRB_INSTALLATION_ID": "site-one",
        "MRB_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    }
    keys = await run(["keys", "init"], {**os.environ, **common}, tmp_path / "keys")
    assert keys.proc.returncode == 0, keys.stderr()

    # The API's port is taken (an API on this host): workers do not listen there.
    api = listen_socket(Listener("127.0.0.1", 0, "MRB_HTTP_PORT"))
    api_port = api.getsockname()[1]

    def worker_env(health: int, metrics: int) -> dict[str, str]:
        env = mrb_env(settings.data_dir, Ports(http=api_port, metrics=metrics), **common)
        return {**env, "MRB_WORKER_HEALTH_PORT": str(health)}

    health = [free_port(), free_port()]
    workers = [
        await start(["worker"], worker_env(health[i], free_port()), tmp_path / f"w{i}")
        for i in range(2)
    ]
    async with cleanup(*workers), contextlib.AsyncExitStack() as holding:
        holding.callback(api.close)
        for port, w in zip(health, workers, strict=True):
            await ready(f"http://127.0.0.1:{port}", w)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                (described,) = await admin.describe_consumer_groups(["mrb-ingest-site-one"])
                members = len(described.groups[0][5])
                if members == 2 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.3)
        finally:
            await admin.close()
        assert members == 2

        # A third on the first's health port: one line naming the setting to change.
        third = await run(["worker"], worker_env(health[0], free_port()), tmp_path / "w3")
        line = refusal(third)
        assert f"127.0.0.1:{health[0]}" in line and "MRB_WORKER_HEALTH_PORT" in line

        for w in workers:  # as systemd or Kubernetes stop a worker
            assert await stop(w, signal.SIGTERM, group=False) == 0
    for w in workers:
        clean(w.stderr())


runner = CliRunner()


@pytest.mark.parametrize(
    ("adapter", "extra"),
    [("hl7v2", []), ("dicom", ["--ae-title", "MRB"])],
)
def test_a_busy_listener_port_is_one_line_naming_the_flag(
    tmp_path: Path, adapter: str, extra: list[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = runner.invoke(
            cli.app,
            ["adapter", adapter, "--hospital", "H001", "--listen", f"127.0.0.1:{port}", *extra],
            env={"MRB_DATA_DIR": str(tmp_path), "COLUMNS": "300"},
        )
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.output, out.output
    assert f"cannot listen on 127.0.0.1:{port}: in use by pid {os.getpid()}" in lines[0]
    assert lines[0].endswith("set --listen to another port")
    assert not (tmp_path / "adapter-outbox.db").exists()  # nothing opened


def test_admin_commands_that_create_state_wait_then_name_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "ADMIN_LOCK_WAIT_SECONDS", 0.3)
    env = {"MRB_DATA_DIR": str(tmp_path), "COLUMNS": "300"}
    holder = lock_data_dir(tmp_path, "mrb up")
    try:
        for args in (["keys", "init"], ["db", "upgrade"]):
            out = runner.invoke(cli.app, args, env=env)
            assert out.exit_code == 2, out.output
            assert f"in use by pid {os.getpid()} (mrb up" in out.output
        assert listing(tmp_path) == {LOCK_FILE}  # neither keys nor a database
    finally:
        holder.release()
    assert runner.invoke(cli.app, ["keys", "init"], env=env).exit_code == 0
    assert runner.invoke(cli.app, ["db", "upgrade"], env=env).exit_code == 0
    assert (tmp_path / "mrb.db").exists() and (tmp_path / "keys" / "pseudonym.key").exists()
