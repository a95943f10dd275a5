"""`GET /fhir/AuditEvent`: the audit trail as BALP AuditEvents, for the `audit` role only.

Search takes `date` (when the entry was recorded; every prefix, ge/le for a range),
`_count`, `_sort` (date or -date; newest first by default) and `_summary=count`, and
pages with the same signed, caller-bound cursors as the other resources. The first page
fixes the newest entry it may show, so entries audited while an auditor pages (their own
reading included) never shift a page. Every search and read of the trail is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from broker.domain.actors import ALL_HOSPITALS, Actor, Role
from broker.fhir.balp import audit_event
from broker.fhir.cursors import CursorSigner, Page, page_links, resume
from broker.fhir.dates import DateError, DateValue, parse_value
from broker.fhir.documents import BundleEntry, ignored_outcome, searchset
from broker.fhir.errors import forbidden, invalid, not_found, not_supported
from broker.fhir.params import parse_count, split_values
from broker.ports.audit_trail import AuditReadUnitOfWork

RESOURCE_TYPE = "AuditEvent"
SORTS = ("date",)
_NO_OPS = frozenset({"_total", "_format", "_pretty"})
_UPTO = "_upto"  # only inside a signed cursor: the newest entry the first page could see


@dataclass(frozen=True)
class AuditSearch:
    dates: tuple[tuple[DateValue, ...], ...] = ()  # each occurrence ANDed, its values ORed
    count: int = 20
    newest_first: bool = True
    summary_count: bool = False
    upto: int | None = None
    canonical: tuple[tuple[str, str], ...] = ()  # what a paging cursor carries
    ignored: tuple[str, ...] = ()


def parse_audit_search(
    pairs: Sequence[tuple[str, str]],
    *,
    strict: bool,
    zone: tzinfo,
    now: datetime,
    from_cursor: bool = False,
) -> AuditSearch:
    """Read an AuditEvent query; FhirError 400 for what cannot be read."""
    dates: list[tuple[DateValue, ...]] = []
    canonical: list[tuple[str, str]] = []
    ignored: list[str] = []
    count, newest_first, summary_count, upto = 20, True, False, None

    def skip(what: str) -> None:
        if strict:
            raise not_supported(f"{what} (Prefer: handling=strict)")
        ignored.append(what)

    for key, raw in pairs:
        name, _, modifier = key.partition(":")
        value = raw.strip()
        if name == _UPTO and from_cursor:
            upto = int(value)
        elif name == "_count":
            count = parse_count(value)
        elif name == "_sort":
            keys = [k.strip() for k in value.split(",") if k.strip()]
            for k in keys:
                if k.removeprefix("-") not in SORTS:
                    skip(f"sort key {k!r} is not supported for AuditEvent")
            known = [k for k in keys if k.removeprefix("-") in SORTS]
            if known:
                newest_first = known[0].startswith("-")
                canonical.append(("_sort", known[0]))
        elif name == "_summary":
            if value == "count":
                summary_count = True
                canonical.append((key, raw))
            elif value != "false":
                skip(f"_summary={value} is not supported (only count and false)")
        elif name in _NO_OPS:
            continue
        elif name == "date":
            if modifier:
                raise not_supported(f"modifier :{modifier} is not supported on date")
            if not value:
                continue
            try:
                dates.append(tuple(parse_value(v, zone, now) for v in split_values(value)))
            except DateError as exc:
                raise invalid(f"date: {exc}") from None
            canonical.append((key, raw))
        else:
            skip(f"parameter {name!r} is not supported for AuditEvent")
    return AuditSearch(
        dates=tuple(dates),
        count=count,
        newest_first=newest_first,
        summary_count=summary_count,
        upto=upto,
        canonical=tuple(canonical),
        ignored=tuple(ignored),
    )


class AuditEvents:
    """Search and read the audit trail as AuditEvents."""

    def __init__(
        self, uow: Callable[[], AuditReadUnitOfWork], signer: CursorSigner, zone: tzinfo
    ) -> None:
        self._uow = uow
        self._signer = signer
        self._zone = zone

    async def search(
        self, actor: Actor, pairs: Sequence[tuple[str, str]], *, strict: bool, base: str
    ) -> dict[str, Any]:
        _authorize(actor)
        now = datetime.now(UTC)
        asked = resume(self._signer, pairs, RESOURCE_TYPE, actor, now)
        pairs, offset = asked.pairs, asked.offset
        search = parse_audit_search(
            pairs,
            strict=strict and not asked.paged,
            zone=self._zone,
            now=now,
            from_cursor=asked.paged,
        )
        hospital = _scope(actor)
        async with self._uow() as uow:
            upto = search.upto
            if upto is None:
                upto = await uow.entries.newest_id()
            total = await uow.entries.count(upto=upto, hospital=hospital, dates=search.dates)
            rows: list[dict[str, Any]] = []
            if search.count > 0 and not search.summary_count:
                rows = await uow.entries.page(
                    upto=upto,
                    hospital=hospital,
                    dates=search.dates,
                    newest_first=search.newest_first,
                    offset=offset,
                    limit=search.count,
                )
            await uow.audit.record_read(
                actor,
                action="audit.read",
                purpose="audit",
                patient=None,
                person_id=None,
                detail={
                    "resource_type": RESOURCE_TYPE,
                    "parameters": sorted({k for k, _ in pairs if k not in ("_cursor", _UPTO)}),
                    "offset": offset,
                    "total": total,
                    "returned": len(rows),
                },
            )
            await uow.commit()
        entries = [BundleEntry(audit_event(r, base), "match") for r in rows]
        entries += ignored_outcome(search.ignored)
        params = (*search.canonical, (_UPTO, str(upto)))
        links = page_links(
            self._signer,
            Page(RESOURCE_TYPE, params, offset, search.count),
            total=total,
            summary_count=search.summary_count,
            actor=actor,
            base=base,
            now=now,
        )
        return searchset(base=base, total=total, entries=entries, links=links, now=now)

    async def read(self, actor: Actor, rid: str, base: str) -> dict[str, Any]:
        _authorize(actor)
        if not rid.isdigit() or len(rid) > 18:
            raise not_found("no AuditEvent with this id is known to mrb")
        async with self._uow() as uow:
            row = await uow.entries.get(int(rid), hospital=_scope(actor))
            if row is None:
                raise not_found(f"AuditEvent/{rid} is not known to mrb")
            await uow.audit.record_read(
                actor,
                action="audit.read",
                purpose="audit",
                patient=None,
                person_id=None,
                detail={"resource": f"AuditEvent/{rid}"},
            )
            await uow.commit()
        return audit_event(row, base)


def _authorize(actor: Actor) -> None:
    if actor.role is not Role.AUDIT:
        raise forbidden(
            f"the audit trail is read with an audit token only; this token's role is "
            f"{actor.role.value}"
        )


def _scope(actor: Actor) -> str | None:
    """A platform auditor sees every hospital's entries (None); any other scope only its own."""
    return None if actor.hospital == ALL_HOSPITALS else actor.hospital
