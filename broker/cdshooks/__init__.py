"""CDS Hooks 2.0 for EHRs: recognition advice while a doctor orders, and its feedback.

- `services`: the CDS Services mrb offers (discovery);
- `models`: the request bodies (hook call, feedback) as the specification defines them;
- `orders`: draft ServiceRequests -> ordered items (LOINC, local codes, imaging);
- `patients`: the patient's identifiers from prefetch or the EHR's FHIR server;
- `cards`: cards, suggestions and override reasons (pure);
- `feedback`: feedback -> an accepted or declined outcome (pure);
- `auth`: the EHR's signed JWT (ES384/RS384 against its registered JWK Set);
- `clients`: registering an EHR (public keys only, https, its FHIR servers);
- `admission`: the rate limits of a hook call;
- `hooks`: answering a hook call and recording feedback (the use cases, on the ports of
  broker/ports/cds.py; their SQL is broker/storage/cds_store.py, `mrb cds` is
  broker/cli/cds_cmd.py).

See docs/standards.md ("CDS Hooks 2.0") for what is supported and why.
"""
