"""Tables of the HIS launch (docs/his-launch.md): launch sessions and the checks they ran.

No column holds a patient identifier in clear, nor a session id: a session is keyed by
the SHA-256 of its cookie's id and keeps what was launched (patient, items, purpose)
sealed with the payload cipher, bound to that hash (broker/storage/launch_store.py). Rows
are purged once expired, whenever a launch opens.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, LargeBinary, String, Table

from broker.storage.metadata import UTCDateTime, metadata

# A launch session: opened by a registered HIS client's signed launch, for one HIS user of
# its hospital, for SESSION_LIFETIME (broker/services/his_launch.py). A revoked client's
# sessions end with it (the store reads only those of active clients).
his_launch_session = Table(
    "his_launch_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's id
    Column("issuer", String(300), ForeignKey("cds_client.issuer"), nullable=False),
    Column("hospital_id", String(32), nullable=False),  # the client's (ordering) hospital
    Column("user_id", String(200), nullable=False),  # the HIS user (the launch's sub)
    Column("launch", LargeBinary, nullable=False),  # sealed JSON: patient, items, purpose
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# A check a launch session ran: the session may record its outcomes while it lives; the
# client that launched it may read its decisions back until expires_at (the read-back
# window, longer than the session: no foreign key to it).
his_launch_check = Table(
    "his_launch_check",
    metadata,
    Column("check_id", String(36), ForeignKey("recognition_check.id"), primary_key=True),
    Column("session_hash", String(64), nullable=False),
    Column("issuer", String(300), nullable=False),
    Column("hospital_id", String(32), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)
