"""Database tables (SQLAlchemy Core). Rows are mapped to domain objects in repositories.

No column holds a patient identifier in clear: people are found by HMAC pseudonyms,
and the received message bytes are stored sealed (AES-GCM).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from broker.storage.metadata import UTCDateTime, metadata

hospital = Table(
    "hospital",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("region", String(12), nullable=False),  # GB/T 2260 code
    Column("level", String(8), nullable=False),  # 1/2/3 (一级/二级/三级)
    Column("timezone", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("grade", String(4), nullable=True),  # 甲 | 乙
    Column("ownership", String(16), nullable=False, server_default="public"),
    Column("price_tier", String(8), nullable=True),  # defaults to the level
)

hospital_alliance = Table(
    "hospital_alliance",
    metadata,
    Column("alliance_id", String(64), primary_key=True),  # 医联体/医共体
    Column("hospital_id", String(32), ForeignKey("hospital.id"), primary_key=True),
)

hospital_key = Table(
    "hospital_key",
    metadata,
    Column("hospital_id", String(32), ForeignKey("hospital.id"), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),  # Ed25519; SM2 can be added
    Column("public_key", String(200), nullable=False),  # base64 of the raw key
    Column("added_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

certification = Table(
    "certification",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hospital_id", String(32), ForeignKey("hospital.id"), nullable=False, index=True),
    Column("scope", String(64), nullable=False),  # catalog item code or QC group
    Column("body", String(32), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_to", Date, nullable=False),
    Column("reference", String(100), nullable=True),  # certificate number
    Column("created_at", UTCDateTime, nullable=False),
)

person = Table(
    "person",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("merged_into", String(36), ForeignKey("person.id"), nullable=True),
    Index(
        "ix_person_merged_into",
        "merged_into",
        postgresql_where=text("merged_into IS NOT NULL"),
        sqlite_where=text("merged_into IS NOT NULL"),
    ),
)

# Birth dates as each hospital sent them (Patient.birthDate), sealed like payloads: the
# age-banded rules need an age; the index keeps no demographics in clear.
person_birth_date = Table(
    "person_birth_date",
    metadata,
    Column("person_id", String(36), ForeignKey("person.id"), primary_key=True),
    Column("hospital_id", String(32), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Each hospital's demographics of a person (name, sex, birth date, phone, address as its
# Patient resource gave them), sealed like payloads: patient matching compares them; the
# index keeps none in clear (migration 0019).
person_demographics = Table(
    "person_demographics",
    metadata,
    Column("person_id", String(36), ForeignKey("person.id"), primary_key=True),
    Column("hospital_id", String(32), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The blocks (broker.domain.matching.blocking_keys) each hospital's record of a person falls
# in, as keyed pseudonyms: candidates for a match are found by them, without a birth date,
# phone or name in clear.
person_block = Table(
    "person_block",
    metadata,
    Column("pseudonym", String(64), primary_key=True),
    Column("person_id", String(36), ForeignKey("person.id"), primary_key=True),
    Column("hospital_id", String(32), primary_key=True),
    Index("ix_person_block_person", "person_id", "hospital_id"),
)

person_link = Table(
    "person_link",
    metadata,
    Column("pseudonym", String(64), primary_key=True),  # HMAC-SHA256 of the link key
    Column("person_id", String(36), ForeignKey("person.id"), nullable=False, index=True),
    Column("scope", String(16), nullable=False),
    Column("hospital_id", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # A national link's system (the pseudonym hides it): a person holds one number of each
    # (broker.domain.linking.conflict; this index holds it against a concurrent worker).
    # NULL for hospital-scoped links, and for national ones the 0027 back-fill left open.
    Column("national_system", String(200), nullable=True),
    Index(
        "uq_person_link_national",
        "person_id",
        "national_system",
        unique=True,
        postgresql_where=text("national_system IS NOT NULL"),
        sqlite_where=text("national_system IS NOT NULL"),
    ),
)

payload = Table(
    "payload",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(36), nullable=False, unique=True),
    Column("hospital_id", String(32), nullable=False),
    Column("content_type", String(100), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("algorithm", String(16), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("hospital_id", String(32), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),  # indexed | duplicate
    Column("results", Integer, nullable=False),
    Column("topic", String(200), nullable=True),
    Column("partition", Integer, nullable=True),
    Column("offset", BigInteger, nullable=True),
    Column("processed_at", UTCDateTime, nullable=False),
)

rejection = Table(
    "rejection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=True, index=True),
    Column("hospital_id", String(64), nullable=True),
    Column("code", String(40), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("topic", String(200), nullable=True),
    Column("partition", Integer, nullable=True),
    Column("offset", BigInteger, nullable=True),
    Column("rejected_at", UTCDateTime, nullable=False),
    # The dead letter, kept beyond Kafka retention for `mrb dlq` (migration 0015): status
    # open | replayed | resolved | purged; the value sealed as the Kafka DLQ copy is.
    Column("status", String(16), nullable=False, server_default="open", index=True),
    Column("value_key_id", String(32), nullable=True),
    Column("value_algorithm", String(16), nullable=True),
    Column("value_sealed", LargeBinary, nullable=True),  # nonce || ciphertext
    Column("headers", JSON, nullable=True),  # [[name, base64 value], ...]
    Column("message_key", LargeBinary, nullable=True),
    Column("replayed_at", UTCDateTime, nullable=True),
    Column("replayed_by", String(200), nullable=True),
    Column("replays", Integer, nullable=False, server_default="0"),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("purged_at", UTCDateTime, nullable=True),
)

result = Table(
    "result",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("hospital_id", String(32), ForeignKey("hospital.id"), nullable=False),
    # A keyed hash of the hospital's identifier for the result (accession, filler order
    # number, StudyInstanceUID): found and unique, never readable; its ciphertext beside it.
    Column("business_id", String(400), nullable=False),
    Column("business_id_sealed", LargeBinary, nullable=True),
    Column("person_id", String(36), ForeignKey("person.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("resource_type", String(40), nullable=False),
    Column("status", String(32), nullable=False),
    Column("effective", UTCDateTime, nullable=True),
    Column("issued", UTCDateTime, nullable=True),
    Column("summary", Text, nullable=False),  # "" once sealed into `clinical`
    Column("clinical", LargeBinary, nullable=True),  # sealed {"summary"}
    Column("timezone_assumed", Boolean, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("hospital_id", "business_id", name="uq_result_identity"),
)

result_version = Table(
    "result_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("result_id", String(36), ForeignKey("result.id"), nullable=False, index=True),
    Column("message_id", String(36), nullable=False),
    Column("payload_id", Integer, ForeignKey("payload.id"), nullable=False),
    Column("source_time", UTCDateTime, nullable=True),
    Column("version_number", Integer, nullable=True),
    Column("version_label", String(64), nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    UniqueConstraint("result_id", "content_hash", name="uq_result_version_content"),
)

result_item = Table(
    "result_item",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("result_id", String(36), ForeignKey("result.id"), nullable=False, index=True),
    Column("person_id", String(36), nullable=False),
    Column("hospital_id", String(32), nullable=False),
    Column("resource_type", String(40), nullable=False),
    Column("resource_id", String(200), nullable=True),
    Column("code_system", String(300), nullable=True),
    Column("code", String(100), nullable=True),
    Column("display", String(300), nullable=True),
    Column("modality", String(16), nullable=True),
    Column("body_site_system", String(300), nullable=True),
    Column("body_site_code", String(64), nullable=True),
    Column("laterality_code", String(64), nullable=True),
    Column("contrast", Boolean, nullable=True),
    Column("status", String(32), nullable=False),
    Column("effective", UTCDateTime, nullable=True),
    Column("summary", Text, nullable=False),
    Column("recognition_mark", String(64), nullable=True),
    # What the rules need to warn and refuse (recognition rules v2): imaging protocol,
    # the value's unit and interpretation flags, and why content is unusable. The summary
    # and the value itself are clinical text: sealed in `clinical` ({"summary", "value"}).
    Column("protocol", String(32), nullable=True),
    Column("clinical", LargeBinary, nullable=True),
    Column("unit", String(64), nullable=True),
    Column("flags", String(64), nullable=True),  # interpretation codes, comma-separated
    Column("no_value", String(120), nullable=True),
    Index("ix_result_item_person_code", "person_id", "code_system", "code"),
    Index("ix_result_item_person_imaging", "person_id", "modality", "body_site_code"),
)

recognition_check = Table(
    "recognition_check",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("ordering_hospital", String(32), nullable=False, index=True),
    Column("person_id", String(36), nullable=True),
    Column("order_time", UTCDateTime, nullable=False),
    Column("emergency", Boolean, nullable=False),
    Column("items", JSON, nullable=False),  # requested items and answers; no identifiers
    # The exact reference data the decision used, so it can be explained later.
    Column("catalog_version", String(200), nullable=True),
    Column("policy_version", String(64), nullable=True),
    # The identifier the doctor asked with, sealed (AES-GCM), so a safety notice can name
    # the patient to that doctor; never readable from the database alone.
    Column("patient_sealed", LargeBinary, nullable=True),
    Column("patient_nonce", LargeBinary, nullable=True),
    Column("patient_key_id", String(32), nullable=True),
)

recognition_outcome = Table(
    "recognition_outcome",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("check_id", String(36), ForeignKey("recognition_check.id"), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),  # accepted | declined
    Column("reason", String(32), nullable=True),  # DeclineReason
    Column("reason_text", Text, nullable=True),
    Column("catalog_code", String(64), nullable=True),
    Column("category", String(16), nullable=True),
    Column("period", String(7), nullable=False, index=True),  # YYYY-MM recorded (CST)
    Column("result_id", String(36), nullable=True),  # the recognised (candidate) result
    Column("hospital_id", String(32), nullable=False),  # the ordering hospital
    Column("recorded_by", String(200), nullable=False),
    Column("channel", String(16), nullable=False),  # api | cds-hooks | web
    Column("recorded_at", UTCDateTime, nullable=False),
    UniqueConstraint("check_id", "item_index", name="uq_recognition_outcome_item"),
    Index("ix_recognition_outcome_result", "result_id"),
)

# Append-only (triggers refuse UPDATE and DELETE): corrections are reversal entries.
# Amounts are integer fen so sums are exact on SQLite as on PostgreSQL.
ledger_entry = Table(
    "ledger_entry",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", String(36), nullable=False, unique=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # saving | reversal | flag
    Column("period", String(7), nullable=False, index=True),  # YYYY-MM booked into
    Column("amount_fen", BigInteger, nullable=False),  # reversal negative, flag 0
    Column("ordering_hospital", String(32), nullable=False, index=True),
    Column("source_hospital", String(32), nullable=True),
    Column("catalog_code", String(64), nullable=True),
    Column("category", String(16), nullable=True),
    Column("check_id", String(36), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("result_id", String(36), nullable=True),
    Column("reverses", String(36), nullable=True),  # entry_id of the saving reversed
    Column("reason", String(64), nullable=True),
    Column("recorded_by", String(200), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    # Who would have paid the amount (migration 0024), fixed at booking: the fund's fraction
    # as decimal text and the fund's and patient's shares in fen (fund + patient = amount;
    # a reversal negates both). NULL: the catalog gave no reimbursement ratio.
    Column("fund_share", String(16), nullable=True),
    Column("fund_fen", BigInteger, nullable=True),
    Column("patient_fen", BigInteger, nullable=True),
)

ledger_period = Table(
    "ledger_period",
    metadata,
    Column("period", String(7), primary_key=True),  # YYYY-MM, closed
    Column("closed_at", UTCDateTime, nullable=False),
    Column("closed_by", String(200), nullable=False),
)

# Transactional outbox for mrb.recognition.v1: written with the ledger, relayed after.
event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(16), nullable=False),  # check | accepted | declined | reversed
    Column("key", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True, index=True),
)

notification = Table(
    "notification",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("notice_id", String(36), nullable=False, unique=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("hospital_id", String(32), nullable=False, index=True),
    Column("recipient", String(200), nullable=False),
    Column("check_id", String(36), nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("result_id", String(36), nullable=False),
    Column("kind", String(16), nullable=False),  # corrected | withdrawn
    Column("new_status", String(32), nullable=False),
    Column("action", String(16), nullable=False),  # reverse | flag
    Column("message", JSON, nullable=False),  # {"zh", "en"}
    Column("created_at", UTCDateTime, nullable=False),
    Column("read_at", UTCDateTime, nullable=True),
)

audit_event = Table(
    "audit_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(32), nullable=False),
    Column("hospital_id", String(32), nullable=True),
    Column("action", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("patient_pseudonym", String(64), nullable=True),
    Column("person_id", String(36), nullable=True),
    Column("detail", JSON, nullable=True),
    # The HTTP request that wrote it (X-Request-ID, also in the access log; migration 0016).
    Column("request_id", String(128), nullable=True),
    # The hash chain (broker/domain/audit_chain.py): set once, when the entry is sealed.
    Column("seq", BigInteger, nullable=True, unique=True),
    Column("prev_hash", String(64), nullable=True),
    Column("hash", String(64), nullable=True),
    # A patient's access report finds their entries by person and by pseudonym (0019).
    Index("ix_audit_event_person", "person_id", "at"),
    Index("ix_audit_event_pseudonym", "patient_pseudonym", "at"),
)

audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", BigInteger, primary_key=True),  # the last sealed entry it covers
    Column("hash", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),  # Ed25519 over checkpoint_message
    Column("at", UTCDateTime, nullable=False),
)

# Local-code mappings added at run time by hospital IT (`mrb mapping add`); they join the
# YAML mappings in schemas/catalog/mappings/ without a restart.
# One version per kind of reference data ("registry", "mappings"), bumped by triggers on
# its tables (migration 0017): processes cache the data until the version moves.
reference_stamp = Table(
    "reference_stamp",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

code_mapping = Table(
    "code_mapping",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hospital_id", String(32), ForeignKey("hospital.id"), nullable=False),
    Column("system", String(300), nullable=False),
    Column("code", String(100), nullable=False),
    Column("catalog_code", String(64), nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    UniqueConstraint("hospital_id", "system", "code", name="uq_code_mapping_code"),
)

# The worklist: local codes seen in results that no mapping turns into a catalog item.
unmapped_code = Table(
    "unmapped_code",
    metadata,
    Column("hospital_id", String(32), primary_key=True),
    Column("system", String(300), primary_key=True),
    Column("code", String(100), primary_key=True),
    Column("display", String(300), nullable=True),
    Column("occurrences", Integer, nullable=False),  # result items seen with it
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("mapped_to", String(64), nullable=True),  # set once mapped: off the worklist
    Column("mapped_at", UTCDateTime, nullable=True),
)

# Every API token issued (never the token itself): who holds it, for what, until when,
# who issued it, and its revocation. A token whose jti is missing here is refused.
issued_token = Table(
    "issued_token",
    metadata,
    Column("jti", String(36), primary_key=True),
    Column("subject", String(200), nullable=False, index=True),
    Column("role", String(32), nullable=False),
    Column("hospital", String(32), nullable=False, index=True),  # '*' for platform roles
    Column("kind", String(16), nullable=False),  # person | machine
    Column("key_id", String(64), nullable=False),  # the issuer key that signed it
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("issued_by", String(200), nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", String(200), nullable=True),
    Column("reason", String(200), nullable=True),
)


# People who log in through the OpenID Connect issuer (MRB_OIDC_ISSUER): mrb, not the
# issuer, says what each may do. A token of an issuer+subject not here, or disabled, is
# refused with 403 until a security administrator maps it (`mrb user map`).
oidc_user = Table(
    "oidc_user",
    metadata,
    Column("issuer", String(300), primary_key=True),
    Column("subject", String(255), primary_key=True),
    Column("role", String(32), nullable=False),
    Column("hospital", String(32), nullable=False, index=True),  # '*' for platform roles
    Column("display_name", String(200), nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime, nullable=True),
)
