"""HIS launch (docs/his-launch.md): a HIS that cannot call CDS Hooks opens a page.

- `GET /launch?token=<JWT>`: the launch URL the HIS signed; one use, at most 5 minutes.
  Exchanged for a launch session cookie, then 303 to `/launch/check` (the token leaves
  the address bar and never reaches a Referer).
- `/launch/check`: the page (broker/web/static/launch.html), framable only by the
  client's registered HIS origins (CSP frame-ancestors; `cds_client.launch_origins`,
  `mrb cds launch-origins`); its JSON calls are under
  `/launch/api/` with the session cookie and its CSRF token, and can only check the
  launched patient for the launched items.
- `GET /launch/decision/{check_id}`: the decisions and outcomes of a check the HIS
  launched, for the HIS itself (its signed JWT, as CDS calls).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from broker.api.deps import ContainerDep
from broker.api.limits import admit_check
from broker.api.problems import problem
from broker.api.routes import recognition
from broker.api.routes.cds_hooks import ClientDep, _jwks_cache
from broker.api.routes.pages import STATIC
from broker.api.schemas import CheckOut, OutcomeOut, ReasonOut
from broker.bootstrap import Container
from broker.correlation import current_request_id
from broker.domain.check_items import StoredCheckItem
from broker.domain.errors import NotAllowed, NotFound, Unauthenticated
from broker.domain.ledger import DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import PatientContext
from broker.security.passwords import csrf_matches, csrf_token
from broker.services import his_launch
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes

router = APIRouter(tags=["his-launch"])
SECURE_COOKIE = "__Host-mrb_launch"
PLAIN_COOKIE = "mrb_launch"  # MRB_WEB_COOKIE_SECURE=false: plain-HTTP demos only
CSRF_HEADER = "X-CSRF-Token"
_PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _cookie_name(container: Container) -> str:
    return SECURE_COOKIE if container.settings.web_cookie_secure else PLAIN_COOKIE


def _csp(origins: list[str]) -> str:
    ancestors = " ".join(origins) if origins else "'none'"
    return f"default-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'none'"


async def _origins(container: Container, issuer: str | None) -> list[str]:
    """The registered HIS origins of an active client (none for anyone else)."""
    if issuer is None:
        return []
    client = await container.cds_clients().client(issuer)
    return list(client.launch_origins) if client is not None else []


async def _context(request: Request, container: Container) -> his_launch.LaunchContext | None:
    return await his_launch.session(
        request.cookies.get(_cookie_name(container)),
        store=container.his_launch_store(),
        cipher=container.cipher,
    )


async def launch_session(request: Request, container: ContainerDep) -> his_launch.LaunchContext:
    """The live launch session of this request, with its CSRF token on a POST."""
    context = await _context(request, container)
    if context is None:
        raise Unauthenticated(
            "Launch session ended",
            "the launch session expired or was never opened: open the check again from the HIS",
        )
    cookie = request.cookies[_cookie_name(container)]
    if request.method not in ("GET", "HEAD") and not csrf_matches(
        his_launch.session_id_of(cookie), request.headers.get(CSRF_HEADER)
    ):
        raise NotAllowed(
            "CSRF token missing or wrong",
            f"send the launch session's CSRF token (GET /launch/api/session) in {CSRF_HEADER}",
        )
    request.state.actor = context.actor
    return context


LaunchDep = Annotated[his_launch.LaunchContext, Depends(launch_session)]


def _refusal_page(status: int, origins: list[str]) -> HTMLResponse:
    rid = html.escape(current_request_id() or "")
    body = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>互认检查无法打开 · Recognition check not opened</title></head><body>
<h1>互认检查无法打开 <small>Recognition check not opened</small></h1>
<p>启动链接无效、已过期或已使用。请照常开单，或从 HIS 重新打开互认检查。</p>
<p>The launch link is invalid, expired or already used. Order as usual, or open the
check again from the HIS.</p>
<p><small>请求编号 Request id: {rid}</small></p></body></html>"""
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": _csp(origins)}
    return HTMLResponse(body, status_code=status, headers=headers)


@router.get("/launch", include_in_schema=True, summary="Open a HIS launch (signed launch JWT)")
async def launch(
    request: Request,
    container: ContainerDep,
    token: Annotated[str, Query(max_length=his_launch.TOKEN_MAX)] = "",
) -> Response:
    """Verify the HIS's launch JWT, open a launch session, and 303 to /launch/check."""
    store = container.his_launch_store()
    settings = container.settings
    try:
        launched = await his_launch.launch(
            token,
            audience=settings.resolved_public_base_url + "launch",
            registry=container.cds_clients(),
            replay=container.cds_replay_guard(),
            jwks_cache=_jwks_cache(request),
            store=store,
            cipher=container.cipher,
        )
    except his_launch.LaunchRefused as exc:
        await his_launch.refused(store, exc)
        # Registered clients see the refusal inside their frame; nobody else may frame it.
        registered = exc.issuer if exc.hospital is not None else None
        if "text/html" in request.headers.get("accept", ""):
            return _refusal_page(401, await _origins(container, registered))
        return problem(
            401,
            "Launch refused",
            "the launch token is invalid, expired or already used: order as usual, or open "
            "the check again from the HIS",
            request_id=current_request_id(),
        )
    response = RedirectResponse("/launch/check", status_code=303, headers=_PAGE_HEADERS)
    secure = settings.web_cookie_secure
    response.set_cookie(
        _cookie_name(container),
        launched.cookie,
        max_age=int(his_launch.SESSION_LIFETIME.total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        # Inside the HIS's frame this is a third-party context: SameSite=None (with CSRF
        # tokens on every change), partitioned to the HIS's site where browsers can.
        samesite="none" if secure else "lax",
    )
    if secure:  # CHIPS; Starlette's `partitioned` needs Python 3.14
        response.raw_headers = [
            (k, v + b"; Partitioned" if k == b"set-cookie" else v) for k, v in response.raw_headers
        ]
    return response


@router.get("/launch/check", include_in_schema=False)
async def launch_page(request: Request, container: ContainerDep) -> FileResponse:
    """The check page; only the launching client's registered HIS origins may frame it."""
    context = await _context(request, container)
    origins = await _origins(container, context.issuer if context else None)
    headers = {**_PAGE_HEADERS, "Content-Security-Policy": _csp(origins)}
    return FileResponse(STATIC / "launch.html", headers=headers)


class LaunchInfo(BaseModel):
    user: str
    hospital: str
    patient: str  # masked: the HIS shows the patient; this only confirms it
    items: list[dict[str, Any]]
    purpose: str | None
    expires_at: datetime
    csrf_token: str
    parent_origins: list[str]  # where the page may post its decision
    decline_reasons: list[ReasonOut]


@router.get("/launch/api/session", response_model=LaunchInfo)
async def launch_info(request: Request, container: ContainerDep, ctx: LaunchDep) -> LaunchInfo:
    """What this launch may do, its CSRF token, and the decline reasons."""
    cookie = request.cookies[_cookie_name(container)]
    return LaunchInfo(
        user=ctx.user,
        hospital=ctx.hospital,
        patient=ctx.masked_patient(),
        items=[{**i, "code": his_launch.item_code(i)} for i in ctx.items],
        purpose=ctx.purpose,
        expires_at=ctx.expires_at,
        csrf_token=csrf_token(his_launch.session_id_of(cookie)),
        parent_origins=await _origins(container, ctx.issuer),
        decline_reasons=await recognition.decline_reasons(),
    )


class LaunchCheckOut(CheckOut):
    codes: list[str] = Field(description="the HIS's code of each item, in order")


@router.post("/launch/api/check", response_model=LaunchCheckOut)
async def launch_check(container: ContainerDep, ctx: LaunchDep) -> LaunchCheckOut:
    """Check the launched patient for the launched items (nothing else can be asked)."""
    actor = ctx.actor
    await admit_check(container, actor, ctx.patient_system, ctx.patient_value, emergency=False)
    now = datetime.now(UTC)
    answer = await run_check(
        container.check_uow(),
        container.rules_provider(),
        CheckRequest(
            patient_system=ctx.patient_system,
            patient_value=ctx.patient_value,
            ordering_hospital=ctx.hospital,
            order_time=now,
            items=ctx.orders(),
            patient=PatientContext(None, None),
            purpose=ctx.purpose,
        ),
        actor,
    )
    await container.his_launch_store().bind_check(
        ctx.session_hash,
        ctx.issuer,
        ctx.hospital,
        answer.check_id,
        readable_until=now + his_launch.READ_BACK_WINDOW,
    )
    return LaunchCheckOut(
        check_id=answer.check_id,
        items=[recognition._item(a) for a in answer.items],
        codes=[his_launch.item_code(i) for i in ctx.items],
    )


class LaunchOutcomeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, lt=his_launch.MAX_ITEMS)
    outcome: OutcomeKind
    reason: DeclineReason | None = None
    reason_text: str | None = Field(default=None, max_length=500)


class LaunchOutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[LaunchOutcomeItem] = Field(min_length=1, max_length=his_launch.MAX_ITEMS)


@router.post("/launch/api/{check_id}/outcome", response_model=OutcomeOut)
async def launch_outcome(
    check_id: str, body: LaunchOutcomeIn, container: ContainerDep, ctx: LaunchDep
) -> OutcomeOut:
    """Accept or decline the items of a check this launch session ran."""
    store = container.his_launch_store()
    if not await store.session_ran(ctx.session_hash, check_id, datetime.now(UTC)):
        raise NotFound("Unknown check", "this launch session ran no such check")
    recorded = await record_outcomes(
        container.outcome_uow(),
        container.reference_rules().catalog,
        check_id,
        [
            OutcomeRequest(i.index, OutcomeInput(i.outcome, i.reason, i.reason_text))
            for i in body.items
        ],
        ctx.actor,
        channel="web",
    )
    return OutcomeOut(check_id=check_id, items=[recognition._outcome(o) for o in recorded])


class DecisionItem(BaseModel):
    index: int
    code: str  # as the HIS named it in the launch
    catalog_code: str | None
    decision: str
    candidate_hospital: str | None
    fee_saved: str | None
    outcome: str | None  # accepted | declined | None (not decided yet)
    reason: str | None
    recorded_by: str | None
    recorded_at: datetime | None


class DecisionOut(BaseModel):
    check_id: str
    hospital: str
    items: list[DecisionItem]


@router.get("/launch/decision/{check_id}", response_model=DecisionOut)
async def launch_decision(check_id: str, container: ContainerDep, client: ClientDep) -> DecisionOut:
    """The decisions and outcomes of a check this HIS client launched (its hospital's)."""
    store = container.his_launch_store()
    record = await store.check_record(check_id)
    if (
        record is None
        or record[0] != client.hospital
        or not await store.client_launched(client.issuer, check_id, datetime.now(UTC))
    ):
        raise NotFound("Unknown check", "no check launched by this client has that id")
    _, raw_items, outcomes = record
    by_index = {int(str(o["item_index"])): o for o in outcomes}
    items = []
    for index, raw in enumerate(raw_items):
        stored = StoredCheckItem.from_json(raw)
        r = stored.requested
        code = r.code if r.modality is None else f"{r.modality}|{r.body_site}"
        o = by_index.get(index, {})
        items.append(
            DecisionItem(
                index=index,
                code=str(code),
                catalog_code=stored.catalog_code,
                decision=stored.decision,
                candidate_hospital=stored.candidate_hospital,
                fee_saved=stored.fee_saved,
                outcome=o.get("outcome"),  # type: ignore[arg-type]
                reason=o.get("reason"),  # type: ignore[arg-type]
                recorded_by=o.get("recorded_by"),  # type: ignore[arg-type]
                recorded_at=o.get("recorded_at"),  # type: ignore[arg-type]
            )
        )
    return DecisionOut(check_id=check_id, hospital=client.hospital, items=items)
