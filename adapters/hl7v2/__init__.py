"""HL7 v2 adapter: ORU^R01 lab results -> FHIR R4 Bundles, MLLP listener, ACKs.

Pure core: `charset` (bytes -> text), `oru` (text -> one Bundle per OBR group),
`ack` (ACK messages, original and enhanced mode), `mllp` (framing and the asyncio
server), `batch` (file mode). `intake` joins them to the adapter's outbox.
"""
