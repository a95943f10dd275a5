"""Ingest: from a Kafka message to indexed results (or a DLQ reason)."""
