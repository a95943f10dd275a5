"""Record header names of mrb.results.v1, its DLQ copies and the receipts (DESIGN.md)."""

from __future__ import annotations

HOSPITAL = "mrb-hospital"  # the registered hospital id
MESSAGE_ID = "mrb-message-id"  # a UUID chosen by the adapter; also the correlation id
KEY_ID = "mrb-key-id"  # which of the signer's keys
SIGNATURE = "mrb-signature"  # Ed25519, standard base64 with padding
CONTENT_TYPE = "content-type"
FHIR_CONTENT_TYPE = "application/fhir+json; fhirVersion=4.0"

# Added by the broker to a DLQ copy.
ERROR_CODE = "mrb-error-code"
ERROR_DETAIL = "mrb-error-detail"
