"""`mrb keys rotate | reencrypt | usage`: rotating the payload key without losing access.

`rotate` adds payload-k<N+1>.key (the active key of every process that loads the keys from
now on; running ones open rows under it as they meet it) and re-seals stored rows under it.
The old key stays until `usage` shows no stored row needs it and the DLQ's retention has
passed (DLQ records are sealed with the key of their day); then the operator removes it.
"""

from __future__ import annotations

from collections import Counter

import typer
from rich.console import Console

from broker.bootstrap import Container
from broker.cli.context import with_container
from broker.security.payload_cipher import PayloadCipher, add_key, key_order
from broker.storage.rekey import keys_in_use, reseal_all

console = Console(soft_wrap=True)


def rotate(
    reencrypt: bool = typer.Option(
        True, help="Re-seal stored rows under the new key now (else run `mrb keys reencrypt`)."
    ),
) -> None:
    """Make a new payload key active and re-seal stored data under it."""

    async def work(c: Container) -> None:
        kid = add_key(c.settings.keys_dir)
        console.print(
            f"payload key {kid} is active for new rows (restart running API and worker "
            "processes so they seal with it; they read rows under it already)"
        )
        if reencrypt:
            await _reseal(c)

    with_container(work)


def reencrypt() -> None:
    """Re-seal every stored row still under an older payload key (resumable)."""

    async def work(c: Container) -> None:
        await _reseal(c)

    with_container(work)


def usage() -> None:
    """How many stored rows each payload key still seals."""

    async def work(c: Container) -> None:
        _print_usage(await keys_in_use(c.sessions), c.cipher)

    with_container(work)


async def _reseal(c: Container) -> None:
    # The container's cipher was loaded before the new key existed: load the dir again.
    cipher = PayloadCipher.from_dir(c.settings.keys_dir, create=False)
    done = await reseal_all(
        c.sessions, cipher, progress=lambda table, n: console.print(f"  {table}: {n} re-sealed")
    )
    console.print(f"re-sealed {sum(done.values())} rows under {cipher.active_key_id}")
    _print_usage(await keys_in_use(c.sessions), cipher)


def _print_usage(used: Counter[str], cipher: PayloadCipher) -> None:
    for kid in sorted(set(used) | set(cipher.key_ids), key=key_order):
        note = " (active)" if kid == cipher.active_key_id else ""
        if not used[kid] and kid != cipher.active_key_id:
            note = " (no stored row needs it; keep it until DLQ retention has passed)"
        console.print(f"{kid}: {used[kid]} rows{note}")
