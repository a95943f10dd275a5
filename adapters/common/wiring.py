"""The parts every adapter is built from: its outbox, signer, trusted receipt keys and,
for a listener, who may connect. A value that cannot be used is printed and the run
stops (`Stop`): exit 2 for a bad option or a missing key, 1 for an unusable outbox."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from adapters.common.envelope import Signer
from adapters.common.outbox import Outbox
from adapters.common.peers import PeerAllowlist, TlsFiles
from adapters.common.receipts import ENV_SETTING, RECEIPT_KEYS_FILE, ReceiptKeyError, ReceiptTrust
from adapters.common.signing import SigningKeyMissing, current_key
from adapters.common.site import Site, Stop, console

NO_RECEIPT_KEY = (
    f"no broker receipt key is configured ({ENV_SETTING}=KID=BASE64, --receipt-key, or the "
    f"broker's {RECEIPT_KEYS_FILE} in MRB_DATA_DIR/keys; `mrb keys show-receipt-key` at the "
    "broker prints it). Every receipt is refused until then: messages are sent but stay "
    "pending in the outbox and are resent."
)


def fail(message: str, code: int = 2) -> Stop:
    """Print `error: message` and return the Stop to raise."""
    console.print(f"[red]error:[/red] {message}")
    return Stop(code)


def open_outbox(site: Site) -> Outbox:
    """The adapter's outbox in the data folder (sealed with an adapter-local key)."""
    key = site.outbox_key()
    path = site.outbox_file
    try:
        return Outbox(path, key)
    except (sqlite3.Error, OSError) as exc:  # a damaged file or disk: nothing is accepted
        raise fail(
            f"the adapter outbox {path} cannot be used ({exc}): nothing was accepted or sent. "
            "Move the file aside (keep it: it may hold messages not yet delivered) and run "
            "again to start a new one",
            1,
        ) from None


def signer(site: Site, hospital: str) -> Signer:
    """The hospital's newest signing key and the routing secret (exit 2 without a key)."""
    try:
        key_id, private_key = current_key(site.keys_dir, hospital)
    except SigningKeyMissing as exc:
        raise fail(str(exc)) from None
    return Signer(hospital, key_id, private_key, site.routing_secret())


def receipt_trust(site: Site, receipt_key: list[str] | None, *, warn: bool = True) -> ReceiptTrust:
    """The broker receipt keys this adapter trusts; exit 2 on a malformed one. With none,
    a warning: receipts are refused, so messages stay pending (the secure default)."""
    try:
        trust = ReceiptTrust.configured(receipt_key or (), site.keys_dir / RECEIPT_KEYS_FILE)
    except ReceiptKeyError as exc:
        raise fail(str(exc)) from None
    if not trust and warn:
        console.print(f"[yellow]warning:[/yellow] {NO_RECEIPT_KEY}")
    return trust


@dataclass(frozen=True)
class ListenerOptions:
    """`--listen HOST:PORT` and who may connect: the same options for MLLP and DICOM."""

    listen: str
    allow_peer: list[str] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None


@dataclass(frozen=True)
class Listening:
    """A listener's checked options: where, and who may connect over what."""

    host: str
    port: int
    peers: PeerAllowlist
    tls: TlsFiles | None

    def access_text(self) -> str:
        return access_text(self.peers, self.tls)


def listening(site: Site, options: ListenerOptions) -> Listening:
    """Check a listener's options before anything is opened: the allowlist and TLS files
    (exit 2 on a bad value or a missing file), then that the port is free."""
    try:
        peers = PeerAllowlist.parse(options.allow_peer or ())
        tls = None
        if (options.tls_cert, options.tls_key, options.tls_client_ca) != (None, None, None):
            if options.tls_cert is None or options.tls_key is None:
                raise ValueError("TLS needs both --tls-cert and --tls-key")
            tls = TlsFiles(options.tls_cert, options.tls_key, options.tls_client_ca)
            tls.context()  # an unreadable file stops the start, not the first connection
    except ValueError as exc:
        raise fail(str(exc)) from None
    host, port = host_port(options.listen, "--listen")
    site.ensure_free(host, port, "--listen")
    return Listening(host, port, peers, tls)


def host_port(value: str, option: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise fail(f"{option} takes HOST:PORT, e.g. 0.0.0.0:2575")
    return host, int(port)


def access_text(peers: PeerAllowlist, tls: TlsFiles | None) -> str:
    return f"accepting {peers}" + (f" over {tls.describe()}" if tls else " (no TLS)")
