"""A `Search` as SQL over the FHIR index: select, count and page in the database.

Date prefixes use the same definition as the Python semantics (broker.fhir.dates), so
what the unit tests prove of `matches` holds of the SQL too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from broker.fhir.dates import LOWEST, DateValue, relation
from broker.fhir.params import WITHDRAWN, Search, Token, TokenFilter
from broker.fhir.resources import clip_code, clip_system
from broker.ports.fhir import Hit, Viewer
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.people import with_merged
from broker.storage.tables import result, result_item

_TICK = timedelta(microseconds=1)  # an instant stands for [t, t + 1 µs)


@dataclass(frozen=True)
class _End:
    """A range endpoint in SQL; `point_high` marks the high end of an instant column."""

    column: Any
    point_high: bool = False

    def at(self, t: datetime) -> datetime:
        # column + 1 µs <op> t  <=>  column <op> t - 1 µs
        return t - _TICK if self.point_high and t > LOWEST else t


class _SqlRelations:
    def before(self, v: _End, t: datetime) -> ColumnElement[bool]:
        return v.column < v.at(t)  # type: ignore[no-any-return]

    def not_after(self, v: _End, t: datetime) -> ColumnElement[bool]:
        return v.column <= v.at(t)  # type: ignore[no-any-return]

    def after(self, v: _End, t: datetime) -> ColumnElement[bool]:
        return v.column > v.at(t)  # type: ignore[no-any-return]

    def not_before(self, v: _End, t: datetime) -> ColumnElement[bool]:
        return v.column >= v.at(t)  # type: ignore[no-any-return]

    def all_of(self, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        return and_(*conditions)

    def any_of(self, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
        return or_(*conditions)

    def negate(self, condition: ColumnElement[bool]) -> ColumnElement[bool]:
        return not_(condition)


def visible_to(viewer: Viewer) -> ColumnElement[bool]:
    """The results (rows of `result`) `viewer` may see: its own hospital's, and another's
    holding no row coded as sensitive (broker.domain.sensitivity). Read from the result's
    items, which outlive a purged payload, so a purged sensitive result stays hidden too.
    A patient who opted out of sharing (`own_only`): the viewer's own results only."""
    if viewer.own_only:
        return result.c.hospital_id == viewer.hospital
    if not viewer.hidden:
        return true()
    ri = result_item.c
    sensitive = exists().where(
        ri.result_id == result.c.id,
        tuple_(ri.code_system, ri.code).in_(sorted(viewer.hidden)),
    )
    return or_(result.c.hospital_id == viewer.hospital, not_(sensitive))


def conditions(search: Search, person_id: str, viewer: Viewer) -> list[ColumnElement[bool]]:
    """The WHERE clause of a search over fhir_resource joined to result."""
    fr = fhir_resource.c
    where: list[ColumnElement[bool]] = [
        result.c.person_id.in_(with_merged(person_id)),
        fr.resource_type == search.resource_type,
        visible_to(viewer),
    ]
    if not search.status_given:
        where.append(or_(fr.status.is_(None), fr.status != WITHDRAWN))
    for tf in search.tokens:
        where.append(_token_filter(tf))
    for df in search.dates:
        if df.target == "lastUpdated":
            where.append(instant_matches(result.c.updated_at, df.values))
            continue
        low, high = _End(fr.date_low), _End(fr.date_high)
        guard = fr.date_low.is_not(None)  # no value: never a match, even for `ne`
        where.append(and_(guard, or_(*(_date(v, low, high) for v in df.values))))
    return where


def instant_matches(column: Any, values: Sequence[DateValue]) -> ColumnElement[bool]:
    """A date parameter's values (ORed) on an instant column, which stands for [t, t + 1 µs)."""
    low, high = _End(column), _End(column, point_high=True)
    return or_(*(_date(v, low, high) for v in values))


async def count(session: AsyncSession, search: Search, person_id: str, viewer: Viewer) -> int:
    query = (
        select(func.count())
        .select_from(fhir_resource.join(result, result.c.id == fhir_resource.c.result_id))
        .where(*conditions(search, person_id, viewer))
    )
    return int((await session.execute(query)).scalar_one())


async def page(
    session: AsyncSession, search: Search, person_id: str, offset: int, limit: int, viewer: Viewer
) -> list[Hit]:
    fr = fhir_resource.c
    order: list[Any] = []
    for key, descending in search.sort:
        column: Any = {"_lastUpdated": result.c.updated_at, "_id": fr.id}.get(key, fr.date_low)
        order.append(case((column.is_(None), 1), else_=0))  # no value: last either way
        order.append(column.desc() if descending else column.asc())
    order.append(fr.id.asc())  # a total order, so pages neither skip nor repeat
    rows = await session.execute(
        select(fr.id, fr.result_id, fr.version_id, fr.resource_type, fr.entry, fr.status)
        .select_from(fhir_resource.join(result, result.c.id == fr.result_id))
        .where(*conditions(search, person_id, viewer))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return [Hit(r.id, r.result_id, r.version_id, r.resource_type, r.entry, r.status) for r in rows]


def _date(value: DateValue, low: _End, high: _End) -> ColumnElement[bool]:
    return relation(value, low, high, _SqlRelations())


def _token_filter(tf: TokenFilter) -> ColumnElement[bool]:
    fr = fhir_resource.c
    if tf.target == "status":  # a code without system; a system given is not checked
        codes = [t.code for t in tf.tokens if t.code is not None]
        if len(codes) < len(tf.tokens):  # `system|`: any status
            return true()
        return fr.status.in_(codes)
    t = fhir_token.c
    return exists().where(
        t.resource_id == fr.id,
        t.param == tf.target,
        or_(*(_token(tok) for tok in tf.tokens)) if tf.tokens else false(),
    )


def _token(tok: Token) -> ColumnElement[bool]:
    t = fhir_token.c
    parts: list[ColumnElement[bool]] = []
    if tok.system is not None:
        parts.append(t.system == clip_system(tok.system))
    if tok.code is not None:
        parts.append(t.code == clip_code(tok.code))
    return and_(true(), *parts)
