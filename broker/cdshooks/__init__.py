"""CDS Hooks 2.0 for EHRs: recognition advice while a doctor orders, and its feedback.

- `services`: the CDS Services mrb offers (discovery);
- `models`: the request bodies (hook call, feedback) as the specification defines them;
- `orders`: draft ServiceRequests -> ordered items (LOINC, local codes, imaging);
- `patients`: the patient's identifiers from prefetch or the EHR's FHIR server;
- `cards`: cards, suggestions and override reasons (pure);
- `feedback`: feedback -> an accepted or declined outcome (pure);
- `auth`: the EHR's signed JWT (ES384/RS384 against its registered JWK Set);
- `store`: the client registry, the replay guard, draft orders and cards (database);
- `hooks`: answering a hook call and recording feedback (the use cases).

See docs/standards.md ("CDS Hooks 2.0") for what is supported and why.
"""
