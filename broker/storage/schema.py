"""The whole schema: every table module imported, so `metadata` holds every table.

Alembic (migrations/env.py) and the schema tests compare against this metadata; a table
module left out here would look like a table to drop.
"""

from __future__ import annotations

from broker.storage import (
    cds_tables,
    consent_tables,
    fhir_tables,
    identity_tables,
    launch_tables,
    rate_limit_tables,
    tables,
    web_tables,
)
from broker.storage.metadata import metadata

__all__ = [
    "cds_tables",
    "consent_tables",
    "fhir_tables",
    "identity_tables",
    "launch_tables",
    "metadata",
    "rate_limit_tables",
    "tables",
    "web_tables",
]
