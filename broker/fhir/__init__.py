"""FHIR R4 read and search over the result index (`/fhir`).

Pure parts (no I/O): `dates` (date search semantics), `params` (parameter parsing),
`resources` (finding a result's resources in its payload and rewriting them),
`cursors` (signed paging cursors), `documents` (Bundle, OperationOutcome,
CapabilityStatement). I/O: `index` (the search index kept beside the result index),
`search` (SQL), `service` (read and search use cases, audit).
"""
