"""Tables for CDS Hooks 2.0 (broker/cdshooks): EHR clients, replay guard, orders, cards.

No column holds a patient identifier in clear: a draft order is keyed by the HMAC
pseudonym of the identifier the check used; cards hold only what the check stored
(hospital ids, dates, catalog names, the result summary) and the EHR's order reference.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from broker.storage.metadata import UTCDateTime, metadata

# An EHR (CDS Client) allowed to call the services: the JWT issuer, the hospital it
# orders for, where its public keys are (a JWKS URL, or a JWK Set given out of band), the
# FHIR servers it may ask mrb to read the Patient from, and, for a HIS that launches the
# check page instead, the origins of its pages.
cds_client = Table(
    "cds_client",
    metadata,
    Column("issuer", String(300), primary_key=True),
    Column("hospital_id", String(32), ForeignKey("hospital.id"), nullable=False, index=True),
    Column("jwks_url", String(1000), nullable=True),
    Column("jwks", JSON, nullable=True),  # {"keys": [...]} public keys only
    # The FHIR server base URLs (https) this EHR may name as fhirServer: mrb sends the
    # EHR's access token to these only. NULL or []: none (the Patient must be prefetched).
    Column("fhir_servers", JSON, nullable=True),
    # The origins (scheme://host[:port]) of the HIS pages that may frame the HIS launch page
    # and receive its decision (docs/his-launch.md). NULL or []: none.
    Column("launch_origins", JSON, nullable=True),
    Column("added_by", String(200), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# Authentication JWTs already used (their jti), kept until they expire: a replay is refused.
cds_jti = Table(
    "cds_jti",
    metadata,
    Column("issuer", String(300), primary_key=True),
    Column("jti", String(200), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# order-select and order-sign for the same draft order are one recognition check: the
# EHR's draft ServiceRequest (per client hospital and patient) -> the check item.
cds_draft_order = Table(
    "cds_draft_order",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hospital_id", String(32), nullable=False),  # the client's (ordering) hospital
    Column("patient_pseudonym", String(64), nullable=False),  # HMAC of the identifier
    Column("draft_ref", String(200), nullable=False),  # e.g. ServiceRequest/123
    Column("order_key", String(64), nullable=False),  # sha256 of what was ordered
    Column("check_id", String(36), ForeignKey("recognition_check.id"), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint(
        "hospital_id",
        "patient_pseudonym",
        "draft_ref",
        "order_key",
        name="uq_cds_draft_order_key",
    ),
)

# Every card returned, so feedback (by card uuid) finds its check item and doctor.
cds_card = Table(
    "cds_card",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("suggestion_uuid", String(36), nullable=True),
    Column("service_id", String(64), nullable=False),
    Column("issuer", String(300), nullable=False),
    Column("hospital_id", String(32), nullable=False),
    Column("user_id", String(200), nullable=False),  # context.userId, e.g. Practitioner/1
    Column("check_id", String(36), ForeignKey("recognition_check.id"), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # recognition | notice
    Column("draft_ref", String(200), nullable=True),
    Column("content", JSON, nullable=False),  # the card without its uuids
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_cds_card_check_item", "check_id", "item_index"),
)
