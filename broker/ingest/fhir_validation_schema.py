"""A pydantic-core schema equivalent to the fhir.resources R4B models, built from them.

The full models validate each nested element with a Python call (`model_validate` behind a
wrap validator, a custom `__init__`, a before- and an after-validator), which costs about
1 ms per message. This module walks the same model classes once and compiles one schema per
resource type that accepts and rejects the same input in Rust:

- every element is a typed dict of the model's fields, extra keys forbidden, each field
  readable by its alias or its name (the models' `populate_by_name`);
- primitives keep the models' own constraints: the same pydantic schemas where the models
  use plain pydantic (string, code, id, uri, integer... patterns and bounds), and for the
  types fhir_core checks in Python (date, dateTime, instant, time, decimal, url) a union
  of pydantic-core schemas that reproduces those checks, error for error;
- the models' after-validator (a required primitive may be replaced by its `_field`
  extension; at most one, or exactly one, of a choice `value[x]`) is a second step of a
  chain, so it runs only when the element's fields are valid, as in the models (a
  zone-less dateTime therefore hides it there too, and here).

Three things stay in Python, on paths rare in results: leap seconds (Python's datetime has
no second 60), base64Binary (pydantic's own decoder, as in the models) and `contained`
resources (any of 140 types: validated by the full models, so exactly as before).

Known difference, stricter on purpose: the models accept a complex element sent as a JSON
string holding the object (`"code": "{\"text\": \"x\"}"`), which is not FHIR JSON and
which extraction cannot read; this schema rejects it.
"""

from __future__ import annotations

import datetime
import decimal
import re
import types
import typing
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core import types as fhir_types
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import TypeAdapter
from pydantic_core import PydanticCustomError, SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

Model = type[FHIRAbstractModel]

# Error messages name the FHIR type: fhir_bundle's zone-less tolerance looks for "DateTime".
_TEMPORAL_ERRORS = {
    "date": "Value error, Date value must be YYYY, YYYY-MM or a valid YYYY-MM-DD",
    "dateTime": "Value error, DateTime value must be YYYY, YYYY-MM, a valid YYYY-MM-DD or a "
    "valid date and time with seconds and a zone",
    "instant": "Value error, Instant value must be a valid date and time with seconds and a zone",
    "time": "Value error, Time value must be a valid hh:mm:ss",
}
_NOT_NONE = cs.is_instance_schema(
    cls=(
        str,
        int,
        float,
        decimal.Decimal,
        datetime.date,
        datetime.time,
        bytes,
        uuid.UUID,
        list,
        dict,
    )
)
_NUMBER = cs.union_schema(
    [cs.int_schema(strict=True), cs.float_schema(strict=True)], mode="left_to_right"
)


def _anchored(pattern: re.Pattern[str] | str) -> str:
    """fhir_core uses re.fullmatch; pydantic-core's Rust regex searches."""
    text = pattern if isinstance(pattern, str) else pattern.pattern
    return f"^(?:{text})$"


def _leap_second(inner: cs.CoreSchema) -> cs.CoreSchema:
    """fhir_core's rule: validate with second 59 in place of 60, keep the string."""
    check = SchemaValidator(inner)

    def validate(value: str) -> str:
        matched = fhir_types.FHIR_LEAP_SECOND.fullmatch(value)
        if matched is None:
            raise PydanticCustomError("leap_second", "not a leap second")
        check.validate_python(matched.group("head") + "59" + matched.group("tail"))
        return value

    return cs.no_info_plain_validator_function(validate)


@cache
def _temporal(kind: str) -> cs.CoreSchema:
    """date, dateTime, instant, time: fhir_core's checks (fhir_core/types.py) as a union.

    Strings must fullmatch the type's spec regex, then (except partial dates) parse with
    pydantic's date/datetime/time parser; other JSON values go to that parser directly,
    which takes numbers as Unix times, as the models do.
    """
    spec: re.Pattern[str]
    parser: cs.CoreSchema
    if kind == "date":
        spec, parser = fhir_types.Date.pattern, cs.date_schema()
    elif kind == "dateTime":
        spec, parser = fhir_types.DateTime.pattern, cs.datetime_schema()
    elif kind == "instant":
        spec, parser = fhir_types.Instant.pattern, cs.datetime_schema()
    else:
        spec, parser = fhir_types.Time.pattern, cs.time_schema()
    text = cs.str_schema(strict=True, pattern=_anchored(spec))
    branches: list[cs.CoreSchema | tuple[cs.CoreSchema, str]] = []
    if kind in ("date", "dateTime"):  # YYYY or YYYY-MM are kept as strings, unparsed
        month = "(-(0[1-9]|1[0-2])"
        year, found, _ = fhir_types.Date.pattern.pattern.partition(month)
        if not found:
            raise RuntimeError("fhir_core's Date pattern changed: review this module")
        branches.append(cs.str_schema(strict=True, pattern=_anchored(f"{year}{month})?")))
    branches.append(cs.chain_schema([text, parser]))
    if kind != "date":
        branches.append(cs.chain_schema([text, _leap_second(parser)]))
    branches.append(cs.chain_schema([_NUMBER, parser]))
    union = cs.union_schema(branches, mode="left_to_right")
    return cs.custom_error_schema(
        union, custom_error_type="fhir_value", custom_error_message=_TEMPORAL_ERRORS[kind]
    )


def _decimal() -> cs.CoreSchema:
    """fhir_core's Decimal: str(value) must match the spec regex (so "1.5" and 1.5 pass)."""
    union = cs.union_schema(
        [
            cs.int_schema(strict=True),
            cs.float_schema(strict=True, allow_inf_nan=False),
            cs.str_schema(strict=True, pattern=_anchored(fhir_types.Decimal.pattern)),
        ],
        mode="left_to_right",
    )
    return cs.custom_error_schema(
        union,
        custom_error_type="fhir_value",
        custom_error_message="Value error, Decimal value string does not match spec regex.",
    )


_CUSTOM_PRIMITIVES: dict[type, Callable[[], cs.CoreSchema]] = {
    fhir_types.Instant: lambda: _temporal("instant"),  # before its base classes
    fhir_types.DateTime: lambda: _temporal("dateTime"),
    fhir_types.Date: lambda: _temporal("date"),
    fhir_types.Time: lambda: _temporal("time"),
    fhir_types.Decimal: _decimal,
    # fhir_core accepts any string (relative paths included); other values crash it.
    fhir_types.Url: lambda: cs.str_schema(strict=True),
}


class _Builder:
    """Walks model classes into pydantic-core definitions, one per element class."""

    def __init__(self) -> None:
        self.definitions: dict[str, cs.CoreSchema] = {}

    def element(self, model: Model) -> cs.CoreSchema:
        ref = f"{model.__module__}.{model.__qualname__}"
        if ref not in self.definitions:
            self.definitions[ref] = cs.any_schema()  # placeholder: breaks recursion
            self.definitions[ref] = self._element(model, ref)
        return cs.definition_reference_schema(ref)

    def _element(self, model: Model, ref: str) -> cs.CoreSchema:
        fields: dict[str, cs.TypedDictField] = {}
        for name, info in model.model_fields.items():
            alias = info.alias if info.alias and info.alias != name else None
            fields[name] = cs.typed_dict_field(
                self.annotation(info.rebuild_annotation()),
                required=info.is_required(),
                validation_alias=alias,
            )
        # FHIRAbstractModel.__init__ pops these two keys and compares them to the type.
        rtype = cs.nullable_schema(cs.literal_schema([model.get_resource_type()]))
        for key in ("resourceType", "resource_type"):
            if key not in fields:
                fields[key] = cs.typed_dict_field(rtype, required=False)
        body = cs.typed_dict_schema(
            fields,
            extra_behavior="forbid",
            total=False,
            config=cs.CoreConfig(validate_by_alias=True, validate_by_name=True),
        )
        checks = _after_checks(model)
        schema = cs.chain_schema([body, *checks]) if checks else body
        return {**schema, "ref": ref}

    def annotation(self, tp: Any) -> cs.CoreSchema:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            inner = (
                self.annotation(members[0])
                if len(members) == 1
                else cs.union_schema([self.annotation(m) for m in members])
            )
            return cs.nullable_schema(inner) if len(members) < len(args) else inner
        if origin is list:
            return cs.list_schema(self.annotation(args[0]))
        if origin is typing.Annotated:
            for meta in args[1:]:
                for kind, build in _CUSTOM_PRIMITIVES.items():
                    if isinstance(meta, kind):
                        return build()
            return _plain_pydantic(tp)
        if isinstance(tp, type) and issubclass(tp, fhir_types.FhirElementOrResourceBase):
            return _contained(tp)
        if isinstance(tp, type) and issubclass(tp, fhir_types.FhirBase):
            return self.element(tp.get_model_klass())
        return _plain_pydantic(tp)  # bool, str, UUID4


def _contained(tp: Any) -> cs.CoreSchema:
    """Any resource type: left to the full models (rare in results, 140 types)."""
    validate = TypeAdapter(tp).validate_python

    def full(value: Any) -> Any:
        try:
            return validate(value)
        except ValidationError:
            raise  # pydantic-core re-raises its errors under this location
        except Exception as exc:  # fhir_core raises KeyError for unknown types
            raise PydanticCustomError(
                "value_error", "not a FHIR R4 resource ({kind})", {"kind": type(exc).__name__}
            ) from None

    return cs.no_info_plain_validator_function(full)


def _plain_pydantic(tp: Any) -> cs.CoreSchema:
    """The schema pydantic itself builds for a type the models validate without fhir_core."""
    return TypeAdapter(tp).core_schema


def _after_checks(model: Model) -> list[cs.CoreSchema]:
    """FHIRAbstractModel.validate_after_model_construction, on the validated fields."""
    instance = model.model_construct()
    checks: list[cs.CoreSchema] = []
    for name, ext in instance.get_required_fields():
        field = model.get_alias_mapping()[name]
        extension = cs.typed_dict_schema(
            {"extension": cs.typed_dict_field(cs.list_schema(min_length=1), required=True)},
            extra_behavior="allow",
        )
        branches: list[cs.CoreSchema | tuple[cs.CoreSchema, str]] = [
            _with({}, required={field: _NOT_NONE})
        ]
        if ext is not None:
            branches.append(_with({}, required={ext: extension}))
        checks.append(
            cs.custom_error_schema(
                cs.union_schema(branches, mode="left_to_right"),
                custom_error_type="fhir_missing",
                custom_error_message=f"Value for the field '{name}' is required.",
            )
        )
    groups = sorted(instance.get_one_of_many_fields().values(), key=len)
    for index, names in enumerate(groups):
        extra = model.model_fields[names[0]].json_schema_extra
        required = isinstance(extra, dict) and extra.get("one_of_many_required") is True
        check = (
            _count_at_most_one(names, required)
            if index == len(groups) - 1
            else cs.union_schema([_only(c, names, required) for c in names], mode="left_to_right")
        )
        message = (
            f"Value error, Expect any of field value from this list {names}."
            if required
            else f"Value error, Any of one field value is expected from this list {names}, "
            "but got multiple!"
        )
        checks.append(
            cs.custom_error_schema(
                check, custom_error_type="fhir_value", custom_error_message=message
            )
        )
    return checks


def _only(chosen: str, names: list[str], required: bool) -> cs.CoreSchema:
    """Every choice but `chosen` absent or null; passes the dict through."""
    others: dict[str, cs.CoreSchema] = {n: cs.none_schema() for n in names if n != chosen}
    return _with(others, required={chosen: _NOT_NONE} if required else None)


def _count_at_most_one(names: list[str], required: bool) -> cs.CoreSchema:
    """The choices that are not null, counted: O(choices), where a union of "only this
    one" branches is O(choices squared) (Extension.value[x] has 50). Ends the chain: its
    output is the choices alone, so it runs last."""
    present = cs.typed_dict_schema(
        {
            n: cs.typed_dict_field(
                cs.with_default_schema(_NOT_NONE, on_error="omit"), required=False
            )
            for n in names
        },
        extra_behavior="ignore",
    )
    count = cs.dict_schema(min_length=1 if required else 0, max_length=1)
    return cs.chain_schema([present, count])


def _with(
    optional: dict[str, cs.CoreSchema], required: dict[str, cs.CoreSchema] | None = None
) -> cs.CoreSchema:
    """A dict check that passes every key through (so checks can follow each other)."""
    fields = {k: cs.typed_dict_field(s, required=False) for k, s in optional.items()}
    fields.update({k: cs.typed_dict_field(s, required=True) for k, s in (required or {}).items()})
    return cs.typed_dict_schema(fields, extra_behavior="allow")


@cache
def resource_validator(resource_type: str) -> SchemaValidator:
    """The compiled validator of one R4B resource type (built on first use, ~0.1 s)."""
    builder = _Builder()
    root = builder.element(get_fhir_model_class(resource_type))
    return SchemaValidator(cs.definitions_schema(root, list(builder.definitions.values())))
