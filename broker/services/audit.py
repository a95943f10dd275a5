"""Moved to broker.storage.audit_log; re-exported while FHIR, CDS and notifications move."""

from broker.storage.audit_log import ADMINISTRATION, record_change, record_read

__all__ = ["ADMINISTRATION", "record_change", "record_read"]
