"""Kafka: topic names, client construction, the embedded Tansu broker."""
