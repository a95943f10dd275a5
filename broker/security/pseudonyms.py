"""Keyed pseudonyms (HMAC-SHA256) for patient identifiers: stored instead of the values."""

from __future__ import annotations

import hashlib
import hmac

from broker.domain.identifiers import PatientIdentifier


class Pseudonymiser:
    """Turns a normalised identifier into a stable pseudonym under one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("pseudonymisation key must have at least 32 bytes")
        self._key = key

    def of(self, identifier: PatientIdentifier) -> str:
        return hmac.new(self._key, identifier.link_key.encode(), hashlib.sha256).hexdigest()

    def of_text(self, domain: str, value: str) -> str:
        """A keyed hash of another value that must be found but not read (a result's
        business identifier: an accession or filler order number), per domain."""
        message = f"{domain}\x1f{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
