"""Topic names fixed by DESIGN.md."""

from __future__ import annotations

RESULTS = "mrb.results.v1"  # FHIR results from the adapters
RESULTS_DLQ = "mrb.results.dlq.v1"  # rejected messages, original value and headers
RECEIPTS = "mrb.receipts.v1"  # one signed receipt per processed message, keyed by hospital
RECOGNITION = "mrb.recognition.v1"  # check / accepted / declined / reversed events
