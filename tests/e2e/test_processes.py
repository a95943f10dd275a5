"""`mrb serve --workers N` and `mrb worker --processes N` on PostgreSQL: the children share
the work (one port, one consumer group), nothing is lost or indexed twice, people shared
across partitions are still linked once, and the unit starts and stops as one."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import pytest

from broker.bootstrap import Container
from tests.conftest import free_port
from tests.e2e.test_own_state import Ports, cleanup, mrb_env, ready, start, stop
from tests.e2e.test_worker_faults import (
    Site,
    assert_exactly_once,
    assert_one_person_each,
    members,
    publish,
    shared_people,
    wait_indexed,
)
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150), pytest.mark.postgres]
on_postgres = pytest.mark.parametrize("db", ["postgres"], indirect=True)


async def _alive(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code == 200
    except httpx.TransportError:
        return False


@on_postgres
async def test_two_worker_processes_form_one_group_and_index_each_message_once(
    site: Site,
) -> None:
    health = free_port()
    while not _port_free(health + 1):
        health = free_port()
    env = site.env(health)
    running = await start(["worker", "--processes", "2"], env, site.logs / "workers")
    site.started.append(running)
    for i in range(2):  # each child answers on its own health port
        await ready(f"http://127.0.0.1:{health + i}", running, timeout=60)
    assert len(await eventually(lambda: members(site.kafka), within=30)) == 2
    sent = shared_people(400, 20, "P2-")
    await publish(site.kafka, sent)
    await wait_indexed(site.container, len(sent), 120)
    await assert_exactly_once(site, sent)
    await assert_one_person_each(site, sent)
    assert await stop(running, signal.SIGTERM, group=False) == 0
    for i in range(2):  # the children stopped with it
        assert not await _alive(f"http://127.0.0.1:{health + i}/healthz")


def _api_env(c: Container) -> tuple[Ports, dict[str, str]]:
    """Ports for an API unit (metrics on port and port + 1) and its environment."""
    ports = Ports()
    while not _port_free(ports.metrics + 1):
        ports = Ports()
    s = c.settings
    env = mrb_env(
        s.data_dir,
        ports,
        MRB_DATABASE_URL=s.resolved_database_url,
        MRB_DATABASE_SCHEMA=s.database_schema or "",
        MRB_LOG_LEVEL="WARNING",
    )
    return ports, env


@on_postgres
async def test_api_processes_share_one_port_and_stop_as_one(container: Container) -> None:
    settings = container.settings
    ports, env = _api_env(container)
    running = await start(["serve", "--workers", "2"], env, settings.data_dir.parent / "serve")
    async with cleanup(running):
        api = f"http://127.0.0.1:{ports.http}"
        for i in range(2):  # each child serves its own metrics
            url = f"http://127.0.0.1:{ports.metrics + i}/metrics"
            await eventually(
                lambda url=url: _alive(url),  # type: ignore[misc]
                within=60,
                what=lambda: running.stderr()[-2000:],
            )
        answers = []
        for _ in range(40):  # a new connection each time: the kernel hands them out
            async with httpx.AsyncClient(timeout=10) as client:
                answers.append((await client.get(f"{api}/healthz")).status_code)
        assert answers == [200] * 40
        served = [await _requests(ports.metrics + i) for i in range(2)]
        assert sum(served) >= 40, served
        assert await stop(running, signal.SIGTERM, group=False) == 0
        assert not await _alive(f"{api}/healthz")


@on_postgres
async def test_a_child_that_dies_stops_the_unit_with_an_error(container: Container) -> None:
    settings = container.settings
    ports, env = _api_env(container)
    running = await start(["serve", "--workers", "2"], env, settings.data_dir.parent / "serve2")
    async with cleanup(running):
        await eventually(lambda: _alive(f"http://127.0.0.1:{ports.metrics + 1}/metrics"), within=60)
        os.kill(await _child_pid(running.pid, index=1), signal.SIGKILL)
        code = await asyncio.wait_for(running.proc.wait(), 40)
        assert code != 0
        assert not await _alive(f"http://127.0.0.1:{ports.http}/healthz")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _requests(metrics_port: int) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("mrb_http_request_seconds_count{")
        )
    )


async def _child_pid(parent: int, *, index: int) -> int:
    async def find() -> int:
        proc = await asyncio.create_subprocess_exec(
            "ps", "--ppid", str(parent), "-o", "pid=,args=", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        for line in out.decode().splitlines():
            pid, _, args = line.strip().partition(" ")
            if args.endswith(f"--child {index}"):
                return int(pid)
        return 0

    return await eventually(find, within=10, what=f"child {index} of {parent}")
