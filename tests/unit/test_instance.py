"""What one process owns: its data folder's lock, its ports, its installation id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.instance import (
    INSTALLATION_ID_FILE,
    DataDirInUse,
    DataDirLock,
    InstallationIdMissing,
    Listener,
    PortInUse,
    ensure_free,
    installation_id,
    listen_socket,
    listening_pids,
    lock_data_dir,
    process_listens,
    writes_data_dir,
)
from broker.settings import Settings

HOLD = """
import sys, time
from pathlib import Path
from broker.instance import lock_data_dir
lock_data_dir(Path(sys.argv[1]), "mrb up")
print("locked", flush=True)
time.sleep(60)
"""


def holder_process(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


class TestDataDirLock:
    def test_a_second_holder_is_refused_with_the_first_ones_pid_and_command(
        self, tmp_path: Path
    ) -> None:
        first = lock_data_dir(tmp_path, "mrb demo")
        try:
            with pytest.raises(DataDirInUse) as refused:
                lock_data_dir(tmp_path, "mrb up")
            message = str(refused.value)
            assert f"pid {os.getpid()} (mrb demo" in message
            assert str(tmp_path) in message and "MRB_DATA_DIR" in message
            assert "\n" not in message
        finally:
            first.release()
        lock_data_dir(tmp_path, "mrb up").release()  # free again once released

    def test_a_waiting_command_gives_up_after_its_wait(self, tmp_path: Path) -> None:
        first = lock_data_dir(tmp_path, "mrb up")
        try:
            started = time.monotonic()
            with pytest.raises(DataDirInUse):
                lock_data_dir(tmp_path, "mrb keys init", wait=0.5)
            assert 0.4 < time.monotonic() - started < 3
        finally:
            first.release()

    def test_the_lock_goes_with_its_process_even_when_killed(self, tmp_path: Path) -> None:
        holder = holder_process(tmp_path)
        try:
            with pytest.raises(DataDirInUse, match=rf"pid {holder.pid} \(mrb up"):
                lock_data_dir(tmp_path, "mrb demo")
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
        with DataDirLock(tmp_path, "mrb demo") as lock:
            assert lock.held
            assert f'"pid": {os.getpid()}' in lock.path.read_text()
        assert lock.path.read_text() == ""  # released: no stale pid left behind

    def test_which_processes_write_their_folder(self, tmp_path: Path) -> None:
        embedded = Settings(data_dir=tmp_path)  # SQLite in the folder, keys made there
        assert writes_data_dir(embedded, embedded_kafka=False)
        api_host = Settings(
            data_dir=tmp_path, database_url="postgresql://db/mrb", kafka_bootstrap="k:9092"
        )
        assert not writes_data_dir(api_host, embedded_kafka=False)  # reads its keys only
        elsewhere = Settings(
            data_dir=tmp_path / "data",
            database_url=f"sqlite:///{tmp_path / 'other.db'}",
            create_keys=False,
        )
        assert not writes_data_dir(elsewhere, embedded_kafka=False)
        assert writes_data_dir(elsewhere, embedded_kafka=True)  # tansu.log


class TestPorts:
    def test_a_busy_port_names_the_setting_and_the_process(self) -> None:
        held = listen_socket(Listener("127.0.0.1", 0, "MRB_HTTP_PORT"))
        port = held.getsockname()[1]
        try:
            assert process_listens(os.getpid(), port) is True
            assert os.getpid() in listening_pids(port)
            with pytest.raises(PortInUse) as refused:
                ensure_free(Listener("127.0.0.1", port, "MRB_WORKER_HEALTH_PORT"))
            message = str(refused.value)
            assert message.startswith(f"cannot listen on 127.0.0.1:{port}: in use by pid ")
            assert str(os.getpid()) in message
            assert message.endswith("set MRB_WORKER_HEALTH_PORT to another port")
            assert isinstance(refused.value, OSError)
        finally:
            held.close()
        ensure_free(Listener("127.0.0.1", port, "MRB_HTTP_PORT"))
        assert process_listens(os.getpid(), port) is False

    def test_a_claimed_socket_is_already_listening(self) -> None:
        held = listen_socket(Listener("127.0.0.1", 0, "MRB_METRICS_PORT"))
        try:
            with socket.create_connection(held.getsockname(), timeout=2):
                pass  # queued in the backlog until the server takes the socket over
        finally:
            held.close()


class TestInstallationId:
    def test_made_once_and_shared_by_every_process_on_the_folder(self, tmp_path: Path) -> None:
        first = Settings(data_dir=tmp_path)
        made = installation_id(first)
        assert (tmp_path / INSTALLATION_ID_FILE).read_text().strip() == made
        assert installation_id(Settings(data_dir=tmp_path)) == made
        assert first.consumer_group == f"mrb-ingest-{made}"
        assert installation_id(Settings(data_dir=tmp_path / "other")) != made

    def test_the_setting_wins_and_is_checked(self, tmp_path: Path) -> None:
        given = Settings(data_dir=tmp_path, installation_id="luzhou-prod")
        assert given.consumer_group == "mrb-ingest-luzhou-prod"
        assert not (tmp_path / INSTALLATION_ID_FILE).exists()
        for bad in ("has space", "-leading", "x" * 65, "é", "a/b"):
            with pytest.raises(ValidationError, match="MRB_INSTALLATION_ID"):
                Settings(data_dir=tmp_path, installation_id=bad)

    def test_production_must_give_it(self, tmp_path: Path) -> None:
        """Workers on several hosts share no folder: a default per host would put each in
        a group of its own, every one of them reading every message."""
        worker = Settings(
            data_dir=tmp_path, database_url="postgresql://db/mrb", kafka_bootstrap="k:9092"
        )
        with pytest.raises(InstallationIdMissing, match="set MRB_INSTALLATION_ID"):
            installation_id(worker)
        assert not (tmp_path / INSTALLATION_ID_FILE).exists()
        (tmp_path / INSTALLATION_ID_FILE).write_text("site-a\n")  # or given as a file
        assert worker.consumer_group == "mrb-ingest-site-a"

    def test_a_damaged_file_is_an_error_not_a_new_group(self, tmp_path: Path) -> None:
        (tmp_path / INSTALLATION_ID_FILE).write_text("not valid!\n")
        with pytest.raises(InstallationIdMissing, match=INSTALLATION_ID_FILE):
            installation_id(Settings(data_dir=tmp_path))
