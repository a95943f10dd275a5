"""A CDS Hooks call's hookInstance and request id in its log lines and audit entry."""

from __future__ import annotations

from broker.storage.tables import audit_event
from tests.integration.test_cds_hooks import (  # the EHR, registered as a CDS client
    SELECT,
    Ehr,
    ehr,
    hook_request,
    lab_order,
    settings,
    sign,
)
from tests.logcapture import json_logs

__all__ = ["ehr", "settings"]  # fixtures


async def test_the_hook_instance_is_logged_with_the_cds_call(
    ehr: Ehr,
) -> None:
    body = hook_request("order-select", lab_order("hgb-1"), selections=["ServiceRequest/hgb-1"])
    with json_logs() as logs:
        token = sign(SELECT)
        response = await ehr.http.post(
            f"/cds-services/{SELECT}",
            json=body,
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "cds-1"},
        )
    assert response.status_code == 200, response.text
    (access,) = logs.where(logger="broker.access", request_id="cds-1")
    assert access["hook_instance"] == body["hookInstance"]
    rows = await ehr.rows(audit_event)
    assert {r["request_id"] for r in rows if r["action"] == "recognition-check"} == {"cds-1"}
