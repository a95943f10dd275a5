"""The FHIR search index: one row per resource mrb serves, and its token values.

Derived from the current version of each result (its sealed payload), so it can always
be rebuilt; broker.storage.fhir_index keeps it current. No patient identifier is stored here:
patients are found through `result.person_id`, and Patient rows only say where in the
payload the Patient resource is.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table

from broker.storage.metadata import UTCDateTime, metadata

fhir_resource = Table(
    "fhir_resource",
    metadata,
    Column("id", String(36), primary_key=True),  # the id served: the result id, or a uuid5
    Column("result_id", String(36), ForeignKey("result.id"), nullable=False),
    Column("version_id", Integer, nullable=False),  # the result_version it was read from
    Column("resource_type", String(40), nullable=False),
    Column("entry", Integer, nullable=True),  # Bundle.entry position; -1 the payload itself
    Column("status", String(32), nullable=True),
    Column("date_low", UTCDateTime, nullable=True),  # effective[x] / started as a range
    Column("date_high", UTCDateTime, nullable=True),
    Index("ix_fhir_resource_result", "result_id", "resource_type"),
)

fhir_token = Table(
    "fhir_token",
    metadata,
    Column("resource_id", String(36), ForeignKey("fhir_resource.id"), primary_key=True),
    Column("param", String(16), primary_key=True),  # code, category, identifier, ...
    Column("system", String(300), primary_key=True),  # "" when the coding has none
    Column("code", String(200), primary_key=True),
)
