"""IHE PDQm Mobile Patient Demographics Query [ITI-78]: `GET [base]/Patient?...` by
demographics, for registered machine clients (pure, no I/O).

https://profiles.ihe.net/ITI/PDQm/ITI-78.html. 2:3.78.4.1.2 lists the parameters a
Supplier supports; mrb supports `family`, `given` (with or without `:exact`: the comparison
below is always exact after normalisation), `birthdate` (a full date, `eq` or no prefix),
`gender`, `telecom`, `identifier` (`system|value`) and `_id`, each at most once and with
one value; `_count` (default 10, at most 50) and `_format`. Unsupported parameters are
ignored and named in a warning OperationOutcome entry, or 400 with `Prefer:
handling=strict` (FHIR R4 search 3.1.1.5.x, which ITI-78 2:3.78.4.1.3 defers to).

How people are found: the demographic parameters make a record (broker.domain.demographics)
whose blocking keys find the people with a stored record in one of those blocks (blocks
above max_block_size skipped, as at ingest); a person matches when one hospital's record
of them satisfies every parameter given:

- family / given: characters when both sides are in characters (张 is not 章), else the
  pinyin (ZHANG finds 张三; the given name against the full name's pinyin with either
  surname order);
- birthdate: equal; gender: equal (male/female; other and unknown find records without
  either); telecom: the phone number's digits (country code dropped) equal.

A search must be able to block: `birthdate`, `telecom`, or `family` with `given` (or an
`identifier` / `_id`, which name the person directly and are then checked against the
demographic parameters given). A search that cannot is 400: a bare family name or gender
would scan the whole index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from broker.domain.demographics import Demographics
from broker.fhir.errors import invalid, not_supported
from broker.fhir.pdq import birth_date

if TYPE_CHECKING:
    from broker.domain.matching import NormalName

DEFAULT_COUNT, MAX_COUNT = 10, 50
SUPPORTED = ("family", "given", "birthdate", "gender", "telecom", "identifier", "_id")
_CONTROL = ("_count", "_format", "_pretty", "_total")
_GENDERS = ("male", "female", "other", "unknown")
MAX_VALUE = 200


@dataclass(frozen=True)
class PdqQuery:
    family: str | None = None
    given: str | None = None
    birthdate: date | None = None
    gender: str | None = None
    telecom: str | None = None
    identifier: tuple[str, str] | None = None  # (system, value) as given
    person_id: str | None = None  # _id
    count: int = DEFAULT_COUNT
    ignored: tuple[str, ...] = ()
    parameters: tuple[str, ...] = field(default=())  # the names used (for the audit)

    @property
    def demographic(self) -> bool:
        return any(
            v is not None
            for v in (self.family, self.given, self.birthdate, self.gender, self.telecom)
        )


def parse_query(pairs: Sequence[tuple[str, str]], *, strict: bool) -> PdqQuery:
    """The ITI-78 query, or a 400 (module docstring)."""
    values: dict[str, str] = {}
    ignored: list[str] = []
    count = DEFAULT_COUNT
    for key, raw in pairs:
        name, _, modifier = key.partition(":")
        value = raw.strip()
        if name in _CONTROL:
            if name == "_count":
                if not value.isdigit():
                    raise invalid("_count takes a whole number")
                count = min(int(value), MAX_COUNT)
            continue
        if name not in SUPPORTED:
            what = f"parameter {name[:40]!r} is not supported by mrb's PDQm Patient search"
            if strict:
                raise not_supported(f"{what} (Prefer: handling=strict)")
            ignored.append(what)
            continue
        if modifier and not (modifier == "exact" and name in ("family", "given")):
            raise not_supported(f"modifier :{modifier[:20]} is not supported on {name}")
        if not value:
            continue  # an empty parameter is ignored (FHIR search)
        if name in values:
            raise invalid(f"{name} may be given once (mrb supports no AND of values)")
        if "," in value and name not in ("identifier", "telecom"):
            raise invalid(f"{name} takes one value (mrb supports no OR of values)")
        if len(value) > MAX_VALUE:
            raise invalid(f"{name} is longer than {MAX_VALUE} characters")
        values[name] = value
    query = PdqQuery(
        family=values.get("family"),
        given=values.get("given"),
        birthdate=_birthdate(values["birthdate"]) if "birthdate" in values else None,
        gender=_gender(values["gender"]) if "gender" in values else None,
        telecom=values["telecom"].rpartition("|")[2] if "telecom" in values else None,
        identifier=_identifier(values["identifier"]) if "identifier" in values else None,
        person_id=values.get("_id"),
        count=count,
        ignored=tuple(ignored),
        parameters=tuple(sorted(values)),
    )
    if query.identifier is None and query.person_id is None and not blocks(query):
        raise invalid(
            "a PDQm Patient search needs birthdate, telecom, family with given, identifier "
            "or _id: mrb does not scan every patient for a name or a gender alone"
        )
    return query


def blocks(query: PdqQuery) -> bool:
    """Whether the demographic parameters give a block to look in."""
    return bool(query.birthdate is not None or query.telecom or (query.family and query.given))


def probe(query: PdqQuery) -> Demographics:
    """The record whose blocking keys find the candidates."""
    return Demographics(
        family=query.family,
        given=query.given,
        sex=query.gender,
        birth_date=query.birthdate,
        phone=query.telecom,
    )


def fits(query: PdqQuery, record: Demographics) -> bool:
    """Whether one hospital's record satisfies every demographic parameter given."""
    from broker.domain import matching

    if query.birthdate is not None and record.birth_date != query.birthdate:
        return False
    if query.gender is not None:
        wanted = matching.normalise_sex(query.gender)
        if matching.normalise_sex(record.sex) != wanted:
            return False
    if query.telecom is not None:
        phone = matching.normalise_phone(query.telecom)
        if phone is None or matching.normalise_phone(record.phone) != phone:
            return False
    if query.family is None and query.given is None:
        return True
    name = matching.normalise_name(record.family, record.given, record.full_name)
    if name is None:
        return False
    return _name_fits(query.family, query.given, name, record)


def _name_fits(
    family: str | None, given: str | None, name: NormalName, record: Demographics
) -> bool:
    from broker.domain import matching

    fam = matching.normalise_name(family, None, None) if family else None
    giv = matching.normalise_name(None, given, None) if given else None
    if (family and fam is None) or (given and giv is None):
        return False
    han = name.han
    if han is not None and (fam is None or fam.han is not None) and (giv is None or giv.han):
        # Both sides in characters: the characters decide (张 is not 章).
        fam_han = fam.han if fam is not None else None
        giv_han = giv.han if giv is not None else None
        split = _han_split(record, han)
        if split is not None:
            return (fam_han is None or split[0] == fam_han) and (
                giv_han is None or split[1] == giv_han
            )
        return (fam_han is None or han.startswith(fam_han)) and (
            giv_han is None or han.endswith(giv_han)
        )
    surnames = fam.orders if fam is not None else None
    given_pinyin = giv.orders if giv is not None else None
    if surnames is not None and not (surnames & name.surnames or _starts(name, surnames)):
        return False
    if given_pinyin is None:
        return True
    heads = surnames if surnames is not None else name.surnames
    return any(o in (s + g, g + s) for o in name.orders for s in heads for g in given_pinyin) or (
        not heads and any(o.endswith(g) for o in name.orders for g in given_pinyin)
    )


def _starts(name: NormalName, surnames: frozenset[str]) -> bool:
    """A name sent as one latin token (ZHANGWEI): the surname as its start."""
    return not name.surnames and any(o.startswith(s) for o in name.orders for s in surnames)


def _han_split(record: Demographics, han: str) -> tuple[str, str] | None:
    """(family, given) in characters when the record split them itself."""
    if record.family and record.given and record.family + record.given == han:
        return record.family, record.given
    if record.family and han.startswith(record.family.strip()):
        return record.family.strip(), han[len(record.family.strip()) :]
    return None


def _birthdate(value: str) -> date:
    found = birth_date(value.removeprefix("eq"))
    if found is None:
        raise invalid(
            "birthdate takes a full date (YYYY-MM-DD, optionally prefixed eq): mrb compares "
            "birth dates exactly"
        )
    return found


def _gender(value: str) -> str:
    if value not in _GENDERS:
        raise invalid(f"gender is one of {', '.join(_GENDERS)}")
    return value


def _identifier(value: str) -> tuple[str, str]:
    system, bar, code = value.partition("|")
    if not bar or not code:
        raise invalid("identifier takes system|value")
    return system, code
