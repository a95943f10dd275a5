"""Hospital-side adapters: turn what a hospital has into signed FHIR R4 messages on Kafka."""
