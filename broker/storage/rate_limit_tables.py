"""Tables for the rate limits shared by every API process (broker/services/rate_limits.py).

No column holds a patient identifier: the distinct-patient counter keeps only the HMAC
pseudonym (or mrb's own person id) of each patient a person looked up, for one hour.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table

from broker.storage.metadata import metadata

# One counter of a limits (https://limits.readthedocs.io) window: requests of one token
# or address in one minute. Times are Unix seconds, as the limits strategies count them.
rate_limit_counter = Table(
    "rate_limit_counter",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
)

# The patients each person looked up in the last hour: who (hospital/subject), the
# patient's pseudonym, and when it was last looked up.
rate_limit_patient = Table(
    "rate_limit_patient",
    metadata,
    Column("person", String(300), primary_key=True),
    Column("patient", String(80), primary_key=True),
    Column("seen_at", Float, nullable=False),
    Index("ix_rate_limit_patient_person_seen", "person", "seen_at"),
)
