"""The consent record (issue "Patient rights"; migration 0021): a person's opt-out of
cross-hospital sharing and consents for sensitive categories, by enterprise person id only.

No identifier, name or pseudonym is kept here: the person id links to the people index
(whose identifiers are keyed pseudonyms), and the evidence is a reference to the signed form
the recording hospital keeps."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table

from broker.storage.metadata import UTCDateTime, metadata

patient_consent = Table(
    "patient_consent",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("person.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # opt-out | sensitive
    Column("category", String(32), nullable=True),  # the sensitive category (sensitive only)
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_role", String(32), nullable=False),
    Column("recorded_hospital", String(32), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("evidence", String(200), nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("withdrawn_at", UTCDateTime, nullable=True),
    Column("withdrawn_by", String(200), nullable=True),
    Index("ix_patient_consent_person", "person_id", "recorded_at"),
)
