"""`mrb keys show-receipt-key|rotate-receipt-key`: the key the broker signs receipts with.

The adapters settle their outbox only on receipts signed with a key they trust
(docs/security.md, "Signed receipts"); these commands publish its public half.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from broker.cli.state import announce
from broker.security.keys import MissingKey
from broker.security.receipt_signing import (
    RECEIPT_KEY_FILE,
    RECEIPT_PUBLIC_FILE,
    ReceiptSigner,
    load_receipt_signer,
    published_entries,
    rotate_receipt_key,
)
from broker.settings import Settings

console = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def init_key(keys: Path, out: Console) -> ReceiptSigner:
    """For `mrb keys init`: create the receipt key if missing (never overwrite) and say
    where its public half is."""
    existed = (keys / RECEIPT_KEY_FILE).exists()
    signer = load_receipt_signer(keys, create=True)
    if not existed:
        out.print(f"created {keys / RECEIPT_KEY_FILE}")
    out.print(
        f"receipts are signed with {signer.key_id}: give adapters {keys / RECEIPT_PUBLIC_FILE} "
        "(or MRB_RECEIPT_PUBLIC_KEYS; `mrb keys show-receipt-key`), never the .key",
        soft_wrap=True,
        highlight=False,
    )
    return signer


def _current(keys: Path) -> ReceiptSigner:
    try:
        return load_receipt_signer(keys, create=False)
    except MissingKey:
        err.print(
            f"[red]error:[/red] no receipt key in {keys}: run `mrb keys init` where the "
            "workers' MRB_DATA_DIR/keys are"
        )
        raise typer.Exit(2) from None


def show_receipt_key() -> None:
    """Print the broker's receipt public key(s) as KID=BASE64, the signing one first: what
    adapters trust (MRB_RECEIPT_PUBLIC_KEYS, --receipt-key, or the file
    keys/receipt-signing.pub copied into their MRB_DATA_DIR/keys)."""
    settings = Settings()
    announce(settings)
    keys = settings.keys_dir
    signer = _current(keys)
    for entry in published_entries(keys):
        mark = "  # signs receipts" if entry == signer.public_entry else "  # previous"
        console.print(entry + mark)
    err.print(
        f"key id {signer.key_id}, public key {signer.public_b64} ({keys / RECEIPT_PUBLIC_FILE})"
    )


def rotate() -> None:
    """Make a new receipt key. Workers sign with it once restarted; keys/receipt-signing.pub
    then lists the new key and the previous one, so adapters given that file trust both."""
    settings = Settings()
    announce(settings)
    keys = settings.keys_dir
    _current(keys)
    old, new = rotate_receipt_key(keys)
    console.print(f"receipt key {old.key_id} -> {new.key_id}")
    console.print(f"  {new.public_entry}")
    console.print(
        f"1. give every adapter the new key as well (copy {keys / RECEIPT_PUBLIC_FILE}, or add "
        "it to MRB_RECEIPT_PUBLIC_KEYS); 2. restart the workers (`mrb worker`, `mrb up`); "
        f"3. once they all run, adapters may drop {old.key_id}. Until an adapter trusts the "
        "new key its receipts are refused and its messages wait in its outbox (none is lost)."
    )
