"""Who may connect to a hospital-side listener (MLLP, DICOM): addresses, TLS, the log line.

A listener is reachable on the hospital network, and whatever it accepts is signed as
the hospital; so by default only loopback may connect, and every connection is logged
once, accepted or refused, with the peer address and the reason (never message content).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")
HANDSHAKE_SECONDS = 30.0  # a peer that opens TLS and stalls is dropped after this


@dataclass(frozen=True)
class PeerAllowlist:
    """The networks a listener accepts connections from."""

    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, cidrs: Iterable[str] = ()) -> PeerAllowlist:
        """CIDRs or bare addresses (commas or spaces also separate); none: loopback only.

        Raises ValueError naming the bad entry (e.g. host bits set: 10.0.0.5/8).
        """
        items = [part for item in cidrs for part in item.replace(",", " ").split()]
        networks: list[IpNetwork] = []
        for item in items or LOOPBACK:
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError as exc:
                raise ValueError(f"not a network or address: {item!r} ({exc})") from None
        return cls(tuple(networks))

    def allows(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # e.g. a Unix socket path: never configured, never allowed
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks)


@dataclass(frozen=True)
class TlsFiles:
    """The listener's certificate and key (PEM); with `client_ca`, clients must present a
    certificate issued by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A server context (TLS 1.2 or later); ValueError if a file cannot be used."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                context.load_verify_locations(cafile=self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the TLS files: {exc}") from None
        return context

    def describe(self) -> str:
        return "TLS with client certificates" if self.client_ca else "TLS"


def peer_text(address: Any) -> str:
    """`host:port` ([host]:port for IPv6) of a socket peer address."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def client_certificate(peercert: Any) -> str | None:
    """The common name of a verified client certificate (getpeercert()), if any."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def log_connection(
    listener: str, peer: str, *, accepted: bool, reason: str, **fields: str | None
) -> None:
    """The one line per connection. Values are JSON-quoted: AE titles come from the peer."""
    decision = "accepted" if accepted else "refused"
    present = {k: v for k, v in fields.items() if v is not None}
    text = "".join(f" {k}={json.dumps(v)}" for k, v in present.items())
    logger.log(
        logging.INFO if accepted else logging.WARNING,
        "%s connection %s: peer=%s reason=%s%s",
        listener,
        decision,
        json.dumps(peer),
        json.dumps(reason),
        text,
        extra={"listener": listener, "peer": peer, "decision": decision, "reason": reason}
        | present,
    )
