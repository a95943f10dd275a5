"""The FHIR adapter: publishes FHIR R4 files (JSON, NDJSON, Bundles, directories)."""
