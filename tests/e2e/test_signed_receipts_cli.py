"""Signed receipts from the command line: the broker publishes its receipt key
(`mrb keys init`, `mrb keys show-receipt-key`, `rotate-receipt-key`), and an adapter
without it warns, keeps its messages pending, and settles them once it is configured."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker.cli.main import app
from broker.runtime import Stack, running_stack
from broker.security.receipt_signing import (
    RECEIPT_KEY_FILE,
    RECEIPT_PUBLIC_FILE,
    load_receipt_signer,
)
from broker.settings import Settings
from broker.storage import hospitals
from tests import factories as f
from tests.conftest import adapter_env

pytestmark = pytest.mark.slow


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    async with running_stack(settings, api=True, worker=True, kafka_needed=True) as s:
        async with s.container.sessions() as session, session.begin():
            await hospitals.add(session, hospitals.Hospital("H001", "H001", "510502", "3"))
        yield s


async def mrb(env: dict[str, str], *args: str, timeout: float = 90) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker.cli", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), timeout))[0].decode()
    assert proc.returncode is not None
    return proc.returncode, out


@pytest.mark.timeout(150)
async def test_an_adapter_without_the_receipt_key_warns_and_keeps_its_messages(
    stack: Stack, tmp_path: Path
) -> None:
    env = await adapter_env(stack, tmp_path)
    configured = env.pop("MRB_RECEIPT_PUBLIC_KEYS")
    (tmp_path / "report.json").write_bytes(f.lab_bundle(accession="CLI-NOKEY"))
    fhir = ("adapter", "fhir", "--hospital", "H001", str(tmp_path / "report.json"))

    code, out = await mrb(env, *fhir, "--timeout", "6", "--resend-after", "1")
    assert code == 1, out
    assert "no broker receipt key is configured (MRB_RECEIPT_PUBLIC_KEYS" in out
    assert "receipt(s) refused" in out and "no-key-configured" in out
    assert "1 message(s) still pending" in out

    code, out = await mrb(env, "adapter", "status")
    assert code == 0, out
    assert "pending: 1, delivered: 0, rejected: 0, receipts refused:" in out
    assert "receipts refused: 0" not in out
    assert "receipt keys trusted: none" in out and "no-key-configured" in out

    # Configured (as the broker prints it), the resend's receipt settles the message.
    code, out = await mrb({**env, "MRB_RECEIPT_PUBLIC_KEYS": configured}, *fhir[:4])
    assert code == 0, out
    assert "duplicate: 1" in out
    # A malformed key is refused at start, naming the setting.
    code, out = await mrb({**env, "MRB_RECEIPT_PUBLIC_KEYS": "k1=nope"}, "adapter", "status")
    assert code == 2 and "MRB_RECEIPT_PUBLIC_KEYS" in out


def test_keys_init_creates_and_show_receipt_key_prints_the_receipt_key(tmp_path: Path) -> None:
    env = {"MRB_DATA_DIR": str(tmp_path), "COLUMNS": "300"}
    runner = CliRunner()
    missing = runner.invoke(app, ["keys", "show-receipt-key"], env=env)
    assert missing.exit_code == 2 and "mrb keys init" in missing.output

    init = runner.invoke(app, ["keys", "init"], env=env)
    assert init.exit_code == 0, init.output
    keys = tmp_path / "keys"
    assert f"created {keys / RECEIPT_KEY_FILE}" in init.output
    assert str(keys / RECEIPT_PUBLIC_FILE) in init.output
    signer = load_receipt_signer(keys, create=False)
    again = runner.invoke(app, ["keys", "init"], env=env)  # never overwrites
    assert load_receipt_signer(keys, create=False) == signer
    assert f"created {keys / RECEIPT_KEY_FILE}" not in again.output

    shown = runner.invoke(app, ["keys", "show-receipt-key"], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"{signer.public_entry}  # signs receipts" in shown.output
    assert signer.key_id in shown.output and signer.public_b64 in shown.output

    rotated = runner.invoke(app, ["keys", "rotate-receipt-key"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = load_receipt_signer(keys, create=False)
    assert f"{signer.key_id} -> {new.key_id}" in rotated.output
    shown = runner.invoke(app, ["keys", "show-receipt-key"], env=env)
    assert f"{new.public_entry}  # signs receipts" in shown.output
    assert f"{signer.public_entry}  # previous" in shown.output
    assert os.stat(keys / RECEIPT_KEY_FILE).st_mode & 0o077 == 0
