"""FHIR R4 read and search over the result index (`/fhir`).

Pure parts (no I/O): `dates` (date search semantics), `params` (parameter parsing),
`resources` (finding a result's resources in its payload and rewriting them),
`cursors` (signed paging cursors), `documents` (Bundle, OperationOutcome,
CapabilityStatement). Use cases: `service` (read and search) and `audit_events` (the
audit trail), on the ports of broker/ports/fhir.py; the index and its SQL are in
broker/storage/fhir_index.py, fhir_query.py and fhir_uow.py.
"""
