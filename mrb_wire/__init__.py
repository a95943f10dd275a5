"""The wire contract between hospital adapters and the broker (DESIGN.md, "Kafka contract").

Standard library only, so an adapter installed at a hospital carries it without the broker:
topic and header names, the bytes a hospital signs and the broker signs back, the FHIR
systems and extension URLs both sides write and read, the per-patient routing key and the
resident ID check digit. Defined here once; neither side spells them itself.
"""
