"""IHE PDQm Mobile Patient Demographics Query [ITI-78]: `GET [base]/Patient?...` by
demographics, for registered machine clients (pure, no I/O).

https://profiles.ihe.net/ITI/PDQm/ITI-78.html. 2:3.78.4.1.2.1 lists the parameters a
Supplier "shall be capable of processing"; mrb's answer to each (docs/standards.md has the
conformance table):

- `family`, `given` (with or without `:exact`: the comparison below is always exact after
  normalisation), `birthdate` (a full date, `eq` or no prefix), `gender`, `telecom`, `_id`:
  each at most once and with one value.
- `identifier` (repeats): at most one `system|value`, which names the person; any number
  of `system|` (comma-separated or repeated) name the domains whose identifiers are
  returned (2:3.78.4.1.2.3, Case 2). A domain mrb does not recognise is 404 `not-found`
  "targetSystem not found" (Case 4, the preferred answer), and so is a `system|value` whose
  system mrb's identifier registry does not know and that finds nobody (mrb keeps
  identifiers only as keyed pseudonyms, so it cannot list the local systems a hospital
  uses: such a system is recognised only by finding someone).
- `address` (`:exact` too), `address-city`, `address-state`: compared with the address the
  hospitals sent, cut into its parts as the matching engine cuts it
  (broker.domain.matching.address_tokens): `address` must be a run of those parts, its
  last part a prefix unless `:exact`; city and state must be a part above the district,
  with or without its suffix (广东 finds 广东省). mrb keeps one address text per record
  (Address.text, or state, city, district and lines joined): a city or province the
  sender left out of it is not found.
- `address-postalcode`, `address-country`: mrb stores neither (NOT_STORED): ignored with a
  warning, or 400 with `Prefer: handling=strict`.
- `active`: `true` or `false`. mrb answers with surviving people only (a person merged
  into another is found as that one, which is active), so `active=true` changes nothing
  and `active=false` finds nobody (a merged person's own record is GET Patient/[id]:
  active false, link replaced-by).
- `mothersMaidenName`: mrb does not store it; always 400 `not-supported`, a documented
  conformance gap.
- `_count` (default 10, at most 50) and `_format`; paging by `next` links whose cursor is
  sealed (broker.fhir.cursors: encrypted and signed, bound to the client), so no
  demographic travels in a URL.

Other parameters are ignored and named in a warning OperationOutcome entry, or 400 with
`Prefer: handling=strict` (FHIR R4 search 3.1.1.5.x, which ITI-78 defers to).

How people are found: the demographic parameters make a record (broker.domain.demographics)
whose blocking keys find the people with a stored record in one of those blocks (blocks
above max_block_size skipped, as at ingest); a person matches when one hospital's record
of them satisfies every parameter given:

- family / given: characters when both sides are in characters (张 is not 章), else the
  pinyin (ZHANG finds 张三; the given name against the full name's pinyin with either
  surname order);
- birthdate: equal; gender: equal (male/female; other and unknown find records without
  either); telecom: the phone number's digits (country code dropped) equal; address as
  above.

A search must be able to block: `birthdate`, `telecom`, or `family` with `given` (or an
`identifier` / `_id`, which name the person directly and are then checked against the
demographic parameters given). A search that cannot is 400: a bare family name, gender or
address would scan the whole index. At most MAX_MATCHES people are checked per search:
`total` counts them, and a warning says when more were found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from broker.domain.demographics import Demographics
from broker.fhir.errors import invalid, not_supported
from broker.fhir.pdq import birth_date

if TYPE_CHECKING:
    from broker.domain.matching import NormalName

DEFAULT_COUNT, MAX_COUNT = 10, 50
MAX_MATCHES = 100  # people checked and counted per search (total counts these)
SUPPORTED = (
    "family",
    "given",
    "birthdate",
    "gender",
    "telecom",
    "identifier",
    "_id",
    "address",
    "address-city",
    "address-state",
    "active",
)
_STRINGS = ("family", "given", "address", "address-city", "address-state")
# ITI-78 2:3.78.4.1.2.1 parameters whose data mrb does not store (module docstring).
NOT_STORED = {
    "address-postalcode": "mrb stores no postal code (a Patient's address is kept as its "
    "text, or state, city, district and lines joined)",
    "address-country": "mrb stores no country (a Patient's address is kept as its text, or "
    "state, city, district and lines joined)",
}
MOTHERS_MAIDEN_NAME = (
    "mothersMaidenName is not stored by mrb (ingest keeps no patient-mothersMaidenName "
    "extension), so mrb cannot search by it: a conformance gap of mrb's PDQm Patient "
    "Demographics Supplier (ITI-78 2:3.78.4.1.2.1 lists it)"
)
DOMAIN_UNKNOWN = "targetSystem not found"
_CONTROL = ("_count", "_format", "_pretty", "_total")
PAGING = (*_CONTROL, "_cursor")  # not part of the search a paging cursor carries


class DomainUnknown(Exception):
    """ITI-78 2:3.78.4.1.3 Case 4: a patient identity domain mrb does not recognise. The
    FHIR edge answers 404 with `outcome` (severity warning, code not-found, diagnostics
    "targetSystem not found", as the profile's table gives it)."""

    def __init__(self, system: str) -> None:
        super().__init__(DOMAIN_UNKNOWN)
        self.system = system

    @property
    def outcome(self) -> dict[str, Any]:
        detail = f"identifier: mrb does not recognise the domain {self.system[:120]!r}"
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "warning", "code": "not-found", "diagnostics": text}
                for text in (DOMAIN_UNKNOWN, detail)
            ],
        }


_SP = "http://hl7.org/fhir/SearchParameter/"
_MMN = "http://hl7.org/fhir/SearchParameter/patient-extensions-Patient-mothersMaidenName"
# The CapabilityStatement's Patient searchParam entries for ITI-78 (2:3.78.4.1.2.1):
# (name, type, definition, documentation), each saying what mrb does with it.
SEARCH_PARAMS: tuple[tuple[str, str, str, str], ...] = (
    ("_id", "token", _SP + "Resource-id", "The mrb person id; exact."),
    (
        "active",
        "token",
        _SP + "Patient-active",
        "true or false. mrb answers with surviving people only (a person merged into "
        "another is found as that one): active=true changes nothing, active=false finds "
        "nobody.",
    ),
    (
        "family",
        "string",
        _SP + "individual-family",
        "Exact after normalisation (:exact accepted): characters when both sides are in "
        "characters, else pinyin. Needs given, birthdate or telecom to search by.",
    ),
    (
        "given",
        "string",
        _SP + "individual-given",
        "Exact after normalisation (:exact accepted), as family.",
    ),
    (
        "identifier",
        "token",
        _SP + "Patient-identifier",
        "system|value names the person (at most one); system| (repeated or comma-"
        "separated) restricts the identifiers returned to those domains. An unrecognised "
        "domain is 404 not-found 'targetSystem not found' (ITI-78 Case 4).",
    ),
    (
        "telecom",
        "token",
        _SP + "individual-telecom",
        "A phone number: its digits compared, country code dropped.",
    ),
    (
        "birthdate",
        "date",
        _SP + "individual-birthdate",
        "A full date (YYYY-MM-DD), eq or no prefix; no ranges.",
    ),
    (
        "address",
        "string",
        _SP + "individual-address",
        "Its parts (省 市 区 路 号 …) a run of the stored address's parts, the last a "
        "prefix unless :exact. mrb keeps one address text per record. Not searchable "
        "alone.",
    ),
    (
        "address-city",
        "string",
        _SP + "individual-address-city",
        "A part of the stored address above the district, with or without its suffix "
        "(市 州 …); not found when the sender left the city out of the address.",
    ),
    (
        "address-state",
        "string",
        _SP + "individual-address-state",
        "A province-level part of the stored address, with or without its suffix "
        "(省 自治区 特别行政区 市).",
    ),
    (
        "address-postalcode",
        "string",
        _SP + "individual-address-postalcode",
        "Not stored by mrb: ignored with a warning, 400 with Prefer: handling=strict.",
    ),
    (
        "address-country",
        "string",
        _SP + "individual-address-country",
        "Not stored by mrb: ignored with a warning, 400 with Prefer: handling=strict.",
    ),
    (
        "gender",
        "token",
        _SP + "individual-gender",
        "male, female, other or unknown (the last two find records with neither).",
    ),
    (
        "mothersMaidenName",
        "string",
        _MMN,
        "Not stored by mrb: always 400 not-supported (a conformance gap).",
    ),
)


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
    domains: tuple[str, ...] = ()  # identifier=system| : the domains to return (2:3.78.4.1.2.3)
    person_id: str | None = None  # _id
    address: str | None = None
    address_exact: bool = False
    city: str | None = None
    state: str | None = None
    active: bool | None = None
    count: int = DEFAULT_COUNT
    ignored: tuple[str, ...] = ()
    parameters: tuple[str, ...] = field(default=())  # the names used (for the audit)

    @property
    def demographic(self) -> bool:
        return any(
            v is not None
            for v in (
                self.family,
                self.given,
                self.birthdate,
                self.gender,
                self.telecom,
                self.address,
                self.city,
                self.state,
            )
        )


def parse_query(pairs: Sequence[tuple[str, str]], *, strict: bool) -> PdqQuery:
    """The ITI-78 query, or a 400 (module docstring)."""
    values: dict[str, str] = {}
    identifiers: list[str] = []
    ignored: list[str] = []
    exact: set[str] = set()
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
        if name == "mothersMaidenName":
            raise not_supported(MOTHERS_MAIDEN_NAME)
        if name in NOT_STORED:
            what = f"parameter {name} cannot be compared: {NOT_STORED[name]}"
            if strict:
                raise not_supported(f"{what} (Prefer: handling=strict)")
            ignored.append(what)
            continue
        if name not in SUPPORTED:
            what = f"parameter {name[:40]!r} is not supported by mrb's PDQm Patient search"
            if strict:
                raise not_supported(f"{what} (Prefer: handling=strict)")
            ignored.append(what)
            continue
        if modifier and not (modifier == "exact" and name in _STRINGS):
            raise not_supported(f"modifier :{modifier[:20]} is not supported on {name}")
        if not value:
            continue  # an empty parameter is ignored (FHIR search)
        if len(value) > MAX_VALUE:
            raise invalid(f"{name} is longer than {MAX_VALUE} characters")
        if name == "identifier":  # repeats (AND); system| lists domains (2:3.78.4.1.2.3)
            identifiers += [v.strip() for v in value.split(",") if v.strip()]
            continue
        if name in values:
            raise invalid(f"{name} may be given once (mrb supports no AND of values)")
        if "," in value and name != "telecom":
            raise invalid(f"{name} takes one value (mrb supports no OR of values)")
        values[name] = value
        if modifier:
            exact.add(name)
    identifier, domains = _identifiers(identifiers)
    query = PdqQuery(
        family=values.get("family"),
        given=values.get("given"),
        birthdate=_birthdate(values["birthdate"]) if "birthdate" in values else None,
        gender=_gender(values["gender"]) if "gender" in values else None,
        telecom=values["telecom"].rpartition("|")[2] if "telecom" in values else None,
        identifier=identifier,
        domains=domains,
        person_id=values.get("_id"),
        address=values.get("address"),
        address_exact="address" in exact,
        city=values.get("address-city"),
        state=values.get("address-state"),
        active=_active(values["active"]) if "active" in values else None,
        count=count,
        ignored=tuple(ignored),
        parameters=tuple(sorted({*values, *(["identifier"] if identifiers else [])})),
    )
    if query.identifier is None and query.person_id is None and not blocks(query):
        raise invalid(
            "a PDQm Patient search needs birthdate, telecom, family with given, identifier "
            "or _id: mrb does not scan every patient for a name, a gender or an address alone"
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
    if not address_fits(query, record.address):
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


def address_fits(query: PdqQuery, stored: str | None) -> bool:
    """`address`: its parts (broker.domain.matching.address_tokens) a run of the stored
    address's parts, the last one as a prefix unless :exact; `address-state` and
    `address-city`: one of the stored address's parts above the district, with or without
    its suffix (广东 finds 广东省; 北京 finds 北京市 as state and as city)."""
    from broker.domain import matching

    if query.address is None and query.city is None and query.state is None:
        return True
    tokens = matching.address_tokens(stored)
    if not tokens:
        return False
    if query.address is not None:
        wanted = matching.address_tokens(query.address)
        if not wanted or not _run(wanted, tokens, prefix_last=not query.address_exact):
            return False
    above = [t for t in tokens if t.endswith(_STATE + _CITY)]
    for part, suffixes in ((query.state, _STATE), (query.city, _CITY)):
        if part is None:
            continue
        text = "".join(matching.address_tokens(part))
        if not text or not any(
            t == text or (t.startswith(text) and t[len(text) :] in suffixes) for t in above
        ):
            return False
    return True


_STATE = ("省", "自治区", "特别行政区", "市")
_CITY = ("市", "州", "自治州", "地区", "盟")


def _run(wanted: tuple[str, ...], tokens: tuple[str, ...], *, prefix_last: bool) -> bool:
    n = len(wanted)
    for i in range(len(tokens) - n + 1):
        window = tokens[i : i + n]
        if window[:-1] != wanted[:-1]:
            continue
        last = window[-1]
        if last == wanted[-1] or (prefix_last and last.startswith(wanted[-1])):
            return True
    return False


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


def _identifiers(given: list[str]) -> tuple[tuple[str, str] | None, tuple[str, ...]]:
    """The one identifier with a value, and the domains (`system|`) asked to be returned."""
    found: list[tuple[str, str]] = []
    domains: list[str] = []
    for value in given:
        system, bar, code = value.partition("|")
        if not bar or not system.strip():
            raise invalid("identifier takes system|value (or system| for a domain to return)")
        if code.strip():
            found.append((system.strip(), code.strip()))
        else:
            domains.append(system.strip())
    if len(found) > 1:
        raise invalid("identifier may name one system|value (mrb supports no AND or OR of them)")
    return (found[0] if found else None), tuple(dict.fromkeys(domains))


def _active(value: str) -> bool:
    if value not in ("true", "false"):
        raise invalid("active is true or false")
    return value == "true"
