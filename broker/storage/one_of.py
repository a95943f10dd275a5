"""`column IN (values)` that PostgreSQL receives as `column = ANY($1)`: one array parameter.

SQLAlchemy sends an IN list as one bound parameter per value, rendered into the SQL at
every execution (its "post-compile" step, a cast per value on asyncpg), so each list
length is new SQL text that asyncpg prepares again. An ingest batch runs a dozen such
lookups (people by pseudonym, results by business identifier, versions, birth dates);
sending them as arrays took 6 % off a batch's instructions (docs/performance.md, "Tenth
round"). `column = ANY(array)` is the same predicate
(NULLs never match either; an empty array matches nothing, like an empty IN), one SQL
text per statement, an index search alike. SQLite has no arrays and keeps the IN list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Boolean, ColumnElement, String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import InternalTraversal


class OneOf(ColumnElement[bool]):
    """`column` equals one of `values` (see the module docstring)."""

    type = Boolean()
    _is_implicitly_boolean = True  # a predicate: SQLite must not get `(… IN …) = 1`
    inherit_cache = True
    # Both parameters take part in the statement's cache key, so a cached statement takes
    # each execution's values from whichever of the two its dialect rendered.
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own declaration is a list)
        ("column", InternalTraversal.dp_clauseelement),
        ("listed", InternalTraversal.dp_clauseelement),
        ("array", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], values: Iterable[Any]) -> None:
        values = list(values)
        self.column = column
        self.listed: BindParameter[Any] = bindparam(None, values, type_=column.type, expanding=True)
        self.array: BindParameter[Any] = bindparam(None, values, type_=ARRAY(_unbounded(column)))


def _unbounded(column: ColumnElement[Any]) -> TypeEngine[Any]:
    """The column's type without a length: a cast to `VARCHAR(20)[]` would cut a longer
    value to 20 characters, which could then equal a stored one; IN compares it whole."""
    kind = column.type
    return String() if isinstance(kind, String) and kind.length is not None else kind


def one_of(column: ColumnElement[Any], values: Iterable[Any]) -> ColumnElement[bool]:
    return OneOf(column, values)


@compiles(OneOf)
def _listed(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.listed), **kw)


@compiles(OneOf, "postgresql")
def _array(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column == any_(element.array), **kw)
