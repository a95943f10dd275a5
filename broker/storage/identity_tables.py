"""Tables of the patient-identity review (issue #17): reversible links between people, and
the review queue of possible matches (migration 0020).

Nothing demographic or identifying in clear: rows name people by their enterprise person
ids (random UUIDs) and keep only what the matcher decided from the sealed demographics
(per-field levels and weights, the rules version).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, String, Table, UniqueConstraint, text

from broker.storage.metadata import UTCDateTime, metadata

# One person linked into another (`person.merged_into` set), by an operator or by an
# automatic demographic MATCH. Rows are never deleted: an unlink ends the link
# (`ended_at`), and a deterministic merge of the two ends it too (end_reason `merged`).
identity_link = Table(
    "identity_link",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("person.id"), nullable=False),  # linked
    Column("into_person_id", String(36), ForeignKey("person.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # manual | automatic
    Column("review_id", String(36), nullable=True),  # the review item confirmed, if any
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("ended_by", String(200), nullable=True),
    Column("end_reason", String(16), nullable=True),  # unlinked | merged
    # A person is linked into at most one other at a time.
    Index(
        "uq_identity_link_active",
        "person_id",
        unique=True,
        postgresql_where=text("ended_at IS NULL"),
        sqlite_where=text("ended_at IS NULL"),
    ),
    Index("ix_identity_link_into", "into_person_id"),
)

# A pair the matcher found at ingest: POSSIBLE_MATCH waits for a platform admin (`open`);
# an automatic MATCH is kept as `linked` so its reasons can be read and undone.
identity_review = Table(
    "identity_review",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("person.id"), nullable=False),  # the record's
    Column("candidate_id", String(36), ForeignKey("person.id"), nullable=False),
    Column("hospital_id", String(32), nullable=False),  # whose record was matched
    Column("decision", String(16), nullable=False),  # MATCH | POSSIBLE_MATCH
    Column("total", Float, nullable=False),
    Column("fields", JSON, nullable=False),  # [{"field", "level", "weight"}]
    Column("identifier", String(16), nullable=False),  # agree | conflict | missing
    Column("hard_rules", JSON, nullable=False),  # names of the rules that changed it
    Column("rules_version", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # open | linked | confirmed | rejected
    Column("created_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decided_by", String(200), nullable=True),
    UniqueConstraint("person_id", "candidate_id", name="uq_identity_review_pair"),
    Index("ix_identity_review_status", "status", "created_at"),
    Index("ix_identity_review_candidate", "candidate_id"),
)
