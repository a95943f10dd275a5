"""Correlation ids and metrics, with the real parts.

A message is followed from the adapter's outbox (stored, sent) through Kafka and the
worker (indexed or rejected, with topic/partition/offset) to the adapter's receipt line,
all by its message id; the worker's lag and end-to-end latency are on its metrics. A
request is followed from its X-Request-ID to its access log line and its audit entry,
whose hash covers it and whose chain still verifies beside entries sealed without one.
A long-running adapter serves its outbox's metrics on MRB_ADAPTER_METRICS_PORT.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from adapters.common.delivery import deliver
from adapters.common.outbox import Outbox
from broker.api.app import create_app
from broker.bootstrap import AuditTrail, Container
from broker.cli.adapter_cmd import OUTBOX_FILE, adapter_metrics
from broker.domain.actors import Actor, Role
from broker.storage.audit_chain import verify
from broker.storage.audit_log import record_read
from broker.storage.tables import audit_event
from tests import factories as f
from tests.conftest import bearer, certify, free_port
from tests.conftest import running_worker as worker
from tests.logcapture import json_logs


def sample(name: str, **labels: str) -> float | None:
    value = REGISTRY.get_sample_value(name, labels)
    return value


def scrape(url: str) -> dict[str, list[Any]]:
    """GET /metrics and parse it as Prometheus does: family name -> samples."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    return {fam.name: fam.samples for fam in text_string_to_metric_families(text)}


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
async def test_a_message_id_follows_a_message_from_the_outbox_to_its_receipt(
    container: Container, kafka: str, tmp_path: Path
) -> None:
    box = Outbox(tmp_path / "outbox.db", b"k" * 32)
    good = f.outgoing(f.lab_bundle(accession="CORR-1"), key=b"p1")
    bad = f.outgoing(b'{"resourceType": "Bundle",', key=b"p2")  # MALFORMED_JSON
    e2e_before = sample("mrb_ingest_end_to_end_seconds_count") or 0.0
    trust = f.receipt_trust(container.settings.keys_dir)
    with json_logs() as logs:
        box.add([(good, "a.json"), (bad, "b.json")])
        async with worker(container, kafka):
            report = await deliver(
                box, kafka, trust=trust, resend_after=timedelta(minutes=5), timeout=30
            )
    box.close()
    assert {r.outcome for r in report.receipts.values()} == {"indexed", "rejected"}
    for message, outcome in ((good, "indexed"), (bad, "rejected")):
        mid = message.message_id
        steps = [x["event"] for x in logs.where(message_id=mid)]
        assert steps == [
            "message stored",
            "message sent",
            f"message {outcome}",
            f"receipt {outcome}",
        ]
        (stored,) = logs.where(message_id=mid, event="message stored")
        assert stored["logger"] == "adapters.common.outbox" and stored["hospital"] == "H001"
        (indexed,) = logs.where(message_id=mid, event=f"message {outcome}")
        assert indexed["logger"] == "broker.ingest.worker" and indexed["topic"] == "mrb.results.v1"
        assert isinstance(indexed["partition"], int) and isinstance(indexed["offset"], int)
        (receipt,) = logs.where(message_id=mid, event=f"receipt {outcome}")
        assert receipt["logger"] == "adapters.common.delivery"
        assert receipt["level"] == ("info" if outcome == "indexed" else "warning")
    assert logs.where(message_id=bad.message_id, event="message rejected")[0]["error_code"] == (
        "MALFORMED_JSON"
    )
    # Metrics of this worker: end-to-end latency for both records, lag per partition.
    assert (sample("mrb_ingest_end_to_end_seconds_count") or 0.0) - e2e_before == 2
    lags = [
        s
        for m in REGISTRY.collect()
        if m.name == "mrb_consumer_lag"
        for s in m.samples
        if s.labels["topic"] == "mrb.results.v1"
    ]
    assert lags and all(s.value == 0 for s in lags)
    # Nothing of the message in any line: no value, accession or origin file name.
    text = repr(logs.lines)
    assert "CORR-1" not in text and "a.json" not in text and f.PATIENT_A not in text


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


CHECK = {
    "patient": {"system": f.NATIONAL, "value": f.PATIENT_A},
    "ordering_hospital": "H002",
    "order_time": "2026-05-20T09:00:00+08:00",
    "items": [{"system": "http://loinc.org", "code": "718-7"}],
}


async def test_a_request_id_follows_a_request_to_its_audit_entry(
    container: Container, api: httpx.AsyncClient
) -> None:
    await certify(container, "H001")
    (p,) = await container.ingest_service().process_batch([f.inbound(f.lab_bundle(), "H001")])
    assert p.outcome.value == "indexed", p.detail
    trail = AuditTrail(container.settings, container.sessions)
    # An entry from before request ids (the CLI, a worker): sealed without one.
    async with container.sessions() as s, s.begin():
        await record_read(
            s, Actor("ops", Role.AUDIT, "*"), action="legacy", purpose="OPERATIONS",
            patient_pseudonym=None, person_id=None,
        )  # fmt: skip
    assert await trail.sealer().seal_once() == 1
    doctor = await bearer(container, "doctor", "H002", "dr.li")
    with json_logs() as logs:
        given = await api.post(
            "/api/v1/recognition/check",
            json=CHECK,
            headers=doctor | {"X-Request-ID": "ehr-7f3a.42"},
        )
        unsafe = await api.post(
            "/api/v1/recognition/check",
            json=CHECK,
            headers=doctor | {"X-Request-ID": f"{f.PATIENT_A} dr li"},
        )
    assert given.status_code == unsafe.status_code == 200, given.text
    assert given.headers["x-request-id"] == "ehr-7f3a.42"
    made = unsafe.headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0  # a new uuid4, the caller's was refused
    for request_id in ("ehr-7f3a.42", made):
        (access,) = logs.where(logger="broker.access", request_id=request_id)
        assert access["route"] == "/api/v1/recognition/check" and access["status"] == 200
    assert f.PATIENT_A not in repr(logs.lines)
    assert await trail.sealer().seal_once() >= 2
    async with container.sessions() as s:
        rows = (await s.execute(select(audit_event).order_by(audit_event.c.seq))).mappings().all()
        report = await verify(s, trail.pinned_keys(), trail.export())
    checks = [r for r in rows if r["action"] == "recognition-check"]
    assert [r["request_id"] for r in checks] == ["ehr-7f3a.42", made]
    assert [r["request_id"] for r in rows if r["action"] == "legacy"] == [None]
    assert report.intact, report.problems


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_listening_adapter_serves_its_outbox_metrics(settings: Any, tmp_path: Path) -> None:
    port = free_port()
    adapter = settings.model_copy(update={"data_dir": tmp_path, "adapter_metrics_port": port})
    box = Outbox(tmp_path / OUTBOX_FILE, b"k" * 32)
    messages = [f.outgoing(f.lab_bundle(accession=f"M{i}"), key=b"p") for i in range(3)]
    box.add([(m, "m.json") for m in messages])
    box.settle(messages[0].message_id, "indexed", None, None)
    box.settle(messages[1].message_id, "rejected", "MALFORMED_JSON", "bad")
    with adapter_metrics(adapter):
        families = scrape(f"http://127.0.0.1:{port}/metrics")
        # A second adapter on the same port: one line naming the setting, exit 2.
        with pytest.raises(typer.Exit) as stopped, adapter_metrics(adapter):
            pass
    assert stopped.value.exit_code == 2
    box.close()
    counts = {
        (s.labels["hospital"], s.labels["state"]): s.value for s in families["mrb_outbox_messages"]
    }
    assert counts == {("H001", "pending"): 1, ("H001", "delivered"): 1, ("H001", "rejected"): 1}
    (oldest,) = families["mrb_outbox_oldest_pending_seconds"]
    assert oldest.labels == {"hospital": "H001"} and oldest.value >= 0
    assert families["mrb_outbox_up"][0].value == 1
    assert "mrb_http_request_seconds" not in families  # the adapter's own registry only
    with pytest.raises(ConnectionRefusedError):  # stopped with the adapter
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
