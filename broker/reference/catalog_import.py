"""A province's or city's published item list (CSV) as a regional catalog override.

Pure functions, no I/O: bytes in; rows, their mapping onto catalog items, the override
document and what it changes out. `mrb catalog import` (broker/cli/catalog_cmd.py) reads
the file and writes the result; schemas/catalog/README.md ("Importing a provincial list")
describes the accepted columns.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import jsonschema

from broker.domain.catalog import LOINC_SYSTEM, Catalog, CatalogItem, ItemKind

# Price tiers as the catalog names them: "3" 三级, "2" 二级, "1" 一级.
TIERS = ("3", "2", "1")

# Field -> accepted header names. Headers are compared after NFKC (full-width brackets and
# letters become ASCII), without spaces and case-insensitively: 互认时限（天） is 互认时限(天).
HEADERS: Mapping[str, tuple[str, ...]] = {
    "code": ("省项目编码", "项目编码", "code"),
    "name": ("项目名称", "name"),
    "loinc": ("LOINC", "LOINC编码", "标准编码", "loinc"),
    "validity_days": ("互认时限(天)", "互认时限", "参考时限(天)", "参考时限", "validity_days"),
    "fee_3": ("三级", "三级价格", "三级价格(元)", "fee_3"),
    "fee_2": ("二级", "二级价格", "二级价格(元)", "fee_2"),
    "fee_1": ("一级", "一级价格", "一级价格(元)", "fee_1"),
    "category": ("类别", "项目类别", "category"),
    "charge_code": ("医保收费编码", "收费编码", "charge_code"),
}
FEE_FIELDS = {"fee_3": "3", "fee_2": "2", "fee_1": "1"}
# A header row is found within the first rows (government exports put a title above it).
HEADER_SEARCH_ROWS = 10
# Cells that mean "nothing here" in published tables.
BLANKS = frozenset({"", "-", "--", "/", "—", "——", "无", "N/A", "n/a"})
MAX_DAYS = 3650  # region.schema.json
MAX_FEE = Decimal("9999999.99")  # region.schema.json: at most seven integer digits
LOINC_CODE = re.compile(r"^[0-9]{1,7}-[0-9]$")
LOINC_SEPARATORS = re.compile(r"[;|]")

# 类别 cell (normalised, lower case) -> catalog category; the first term that matches wins:
# a Latin term must start the cell (CT平扫, MRI, PET-CT), a Chinese one may be anywhere in it
# (临床化学检验类). Anything else (放射影像, 病理 …) names no category and is not checked.
CATEGORY_TERMS: tuple[tuple[str, str], ...] = (
    ("检验", "LAB"),
    ("lab", "LAB"),
    ("pet", "NM"),
    ("核医学", "NM"),
    ("nm", "NM"),
    ("ct", "CT"),
    ("mr", "MR"),
    ("磁共振", "MR"),
    ("dr", "DR"),
    ("dx", "DR"),
    ("x线", "DR"),
    ("钼靶", "DR"),
    ("超声", "US"),
    ("彩超", "US"),
    ("us", "US"),
    ("ultrasound", "US"),
    ("心电", "ECG"),
    ("ecg", "ECG"),
)


class ImportFileError(ValueError):
    """The file cannot be read as an item list: `cause` says why, `fix` what to do."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(f"{cause}. Fix: {fix}")
        self.cause = cause
        self.fix = fix


class Rule(StrEnum):
    """How a row found its catalog item, in the order they are tried."""

    LOINC = "loinc"
    CHARGE_CODE = "charge-code"
    NAME = "name"


class Reason(StrEnum):
    """Why a row was not applied."""

    NO_LOINC_MATCH = "no-loinc-match"
    UNKNOWN_CHARGE_CODE = "unknown-charge-code"
    NAME_NOT_FOUND = "name-not-found"
    AMBIGUOUS = "ambiguous"
    CATEGORY_MISMATCH = "category-mismatch"
    DUPLICATE = "duplicate"
    INVALID_DAYS = "invalid-days"
    INVALID_FEE = "invalid-fee"
    MALFORMED_ROW = "malformed-row"


@dataclass(frozen=True)
class Row:
    """One data row as written in the file (cells trimmed, nothing interpreted yet)."""

    line: int  # line of the file the row ends on (1 = the first line)
    code: str = ""
    name: str = ""
    loinc: tuple[str, ...] = ()
    validity_days: str = ""
    fees: Mapping[str, str] = field(default_factory=dict)  # tier -> cell
    category: str = ""
    charge_code: str = ""
    overflow: tuple[str, ...] = ()  # non-empty cells beyond the header's columns

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "name": self.name}


@dataclass(frozen=True)
class ParsedFile:
    encoding: str  # utf-8, utf-8-sig (with BOM) or gb18030
    columns: Mapping[str, str]  # field -> the header as written
    ignored_columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Mapped:
    row: Row
    item: str
    by: Rule
    validity_days: int | None
    fees: Mapping[str, Decimal]  # only the tiers the row gives

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.row.as_dict(),
            "item": self.item,
            "by": str(self.by),
            "validity_days": self.validity_days,
            "fees": {t: str(v) for t, v in self.fees.items()},
        }


@dataclass(frozen=True)
class Unmapped:
    row: Row
    reason: Reason
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.row.as_dict(), "reason": str(self.reason), "detail": self.detail}


@dataclass(frozen=True)
class Plan:
    """Every row, mapped or not; `mapped` holds at most one value set per item."""

    mapped: tuple[Mapped, ...]
    unmapped: tuple[Unmapped, ...]

    @property
    def rows(self) -> int:
        return len(self.mapped) + len(self.unmapped)

    def by_rule(self) -> dict[str, int]:
        return {str(r): sum(1 for m in self.mapped if m.by is r) for r in Rule}

    def validity_days(self) -> dict[str, int]:
        return {m.item: m.validity_days for m in self.mapped if m.validity_days is not None}

    def fees(self) -> dict[str, dict[str, Decimal]]:
        return {m.item: dict(m.fees) for m in self.mapped if m.fees}


@dataclass(frozen=True)
class Change:
    """An item whose window or fee differs from what the broker uses now for the region."""

    item: str
    name: str
    what: str  # validity_days, or fee:<tier>
    old: str | None
    new: str
    old_source: str | None = None  # the current window's citation (None: a default)

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "name": self.name,
            "what": self.what,
            "old": self.old,
            "new": self.new,
            "old_source": self.old_source,
        }


# ---------------------------------------------------------------------------- reading


def _norm(text: str) -> str:
    """NFKC without whitespace: full-width brackets, digits and letters become ASCII."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def _header_key(text: str) -> str:
    return _norm(text).casefold()


_FIELD_OF_HEADER = {_header_key(h): f for f, names in HEADERS.items() for h in names}


def decode(data: bytes) -> tuple[str, str]:
    """The file's text and encoding: UTF-8 (with or without BOM), else GB18030."""
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ImportFileError(
            "the file is an Excel workbook (.xlsx/.xls), not a CSV",
            "open it in Excel or WPS, save it as CSV (CSV UTF-8 or plain CSV) and import that",
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:
        raise ImportFileError(
            "the file is UTF-16 or binary, not a CSV (Excel's 'Unicode text' is UTF-16)",
            "save it from Excel or WPS as CSV UTF-8 (or plain CSV) and import that",
        )
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding == "utf-8-sig" and not data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8"
        return text, encoding
    raise ImportFileError(
        "the file is neither UTF-8 nor GB18030 text",
        "save it as CSV UTF-8 (or plain CSV from a Chinese-language Excel or WPS)",
    )


def _columns(cells: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for i, cell in enumerate(cells):
        name = _FIELD_OF_HEADER.get(_header_key(cell))
        if name is None:
            continue
        if name in found:
            raise ImportFileError(
                f"columns {cells[found[name]]!r} and {cell!r} both mean {name}",
                "keep one of them (or rename the other to a header the importer does not know)",
            )
        found[name] = i
    return found


def _complete(columns: Mapping[str, int]) -> bool:
    return "name" in columns and (
        "validity_days" in columns or any(f in columns for f in FEE_FIELDS)
    )


def _accepted(*fields: str) -> str:
    return "; ".join(f"{f}: {' / '.join(HEADERS[f])}" for f in fields)


def parse(data: bytes) -> ParsedFile:
    """Decode and read the rows under the header row (raises ImportFileError)."""
    text, encoding = decode(data)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        records = [(reader.line_num, [c.strip() for c in cells]) for cells in reader]
    except csv.Error as exc:
        raise ImportFileError(
            f"the file is not a readable CSV ({exc})",
            "export the list from Excel or WPS as CSV and import that file",
        ) from None
    records = [(line, cells) for line, cells in records if any(cells)]
    if not records:
        raise ImportFileError(
            "the file is empty", "export the list with its header row and rows as CSV"
        )
    # The first complete header row; failing that, the row naming the most columns.
    header_at, header, columns = 0, records[0][1], _columns(records[0][1])
    for i, (_, cells) in enumerate(records[:HEADER_SEARCH_ROWS]):
        found = _columns(cells)
        if _complete(found) or len(found) > len(columns):
            header_at, header, columns = i, cells, found
        if _complete(found):
            break
    else:
        missing = [f for f in ("name", "validity_days") if f not in columns]
        shown = ", ".join(repr(c) for c in header if c) or "(none)"
        raise ImportFileError(
            f"no header row with the needed columns in the first {HEADER_SEARCH_ROWS} rows: "
            f"missing {', '.join(missing)} (line {records[header_at][0]} has {shown})",
            "give the list a header row naming its columns, with at least "
            f"{_accepted('name', 'validity_days')} (or a fee column instead of the window); "
            "all accepted headers are in schemas/catalog/README.md, 'Importing a provincial list'",
        )
    width = max(len(header), *(i + 1 for i in columns.values()))
    rows = tuple(_row(line, cells, columns, width) for line, cells in records[header_at + 1 :])
    if not rows:
        raise ImportFileError(
            "the file has a header row but no rows under it",
            "export the whole list, not only its header",
        )
    ignored = tuple(c for i, c in enumerate(header) if c and i not in columns.values())
    return ParsedFile(encoding, {f: header[i] for f, i in columns.items()}, ignored, rows)


def _row(line: int, cells: Sequence[str], columns: Mapping[str, int], width: int) -> Row:
    def cell(name: str) -> str:
        i = columns.get(name)
        return cells[i] if i is not None and i < len(cells) else ""

    return Row(
        line=line,
        code=cell("code"),
        name=cell("name"),
        loinc=split_loinc(cell("loinc")),
        validity_days=cell("validity_days"),
        fees={tier: cell(f) for f, tier in FEE_FIELDS.items() if cell(f)},
        category=cell("category"),
        charge_code=_norm(cell("charge_code")),
        overflow=tuple(c for c in cells[width:] if c) if len(cells) > width else (),
    )


def split_loinc(cell: str) -> tuple[str, ...]:
    """LOINC codes separated by ; or | (full-width ； and ｜ too); blanks like - dropped."""
    parts = (p.strip() for p in LOINC_SEPARATORS.split(unicodedata.normalize("NFKC", cell)))
    return tuple(dict.fromkeys(p for p in parts if p not in BLANKS))


def parse_days(cell: str) -> int | None:
    """Whole days 1-3650 (a trailing 天 or 日 is allowed); None for an empty cell."""
    text = _norm(cell)
    if text in BLANKS:
        return None
    number = text.removesuffix("天").removesuffix("日")
    if not number.isascii() or not number.isdigit() or not 1 <= int(number) <= MAX_DAYS:
        raise ValueError(f"互认时限 {cell!r} is not a whole number of days from 1 to {MAX_DAYS}")
    return int(number)


def parse_fee(cell: str) -> Decimal | None:
    """Yuan with at most two decimals (¥ prefix, 元 suffix, thousands commas allowed)."""
    text = _norm(cell)
    if text in BLANKS:
        return None
    number = text.removeprefix("¥").removesuffix("元").replace(",", "")
    try:
        value = Decimal(number)
    except InvalidOperation:
        value = Decimal("NaN")
    if (
        not value.is_finite()
        or value < 0
        or value > MAX_FEE
        or value != value.quantize(Decimal("0.01"))
    ):
        raise ValueError(f"fee {cell!r} is not an amount in yuan with at most two decimals")
    return value.quantize(Decimal("0.01"))


def category_of(cell: str) -> str | None:
    """The catalog category a 类别 cell names, or None when it names none (not checked)."""
    text = _header_key(cell)
    return next(
        (
            category
            for term, category in CATEGORY_TERMS
            if (text.startswith(term) if term.isascii() else term in text)
        ),
        None,
    )


# ---------------------------------------------------------------------------- mapping


@dataclass(frozen=True)
class _Index:
    catalog: Catalog
    by_charge: Mapping[str, frozenset[str]]
    by_name: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, catalog: Catalog) -> _Index:
        charge: dict[str, set[str]] = {}
        names: dict[str, set[str]] = {}
        for item in catalog.items.values():
            for code in item.charge_codes:
                charge.setdefault(_norm(code), set()).add(item.code)
            names.setdefault(_norm(item.name_zh), set()).add(item.code)
        return cls(
            catalog,
            {k: frozenset(v) for k, v in charge.items()},
            {k: frozenset(v) for k, v in names.items()},
        )


def _candidates(row: Row, index: _Index) -> tuple[dict[Rule, set[str]], list[str]]:
    """Items each rule finds for the row, and what each rule that found nothing tried."""
    found: dict[Rule, set[str]] = {rule: set() for rule in Rule}
    missed: list[str] = []
    for code in row.loinc:
        item = index.catalog.item_for_code(None, LOINC_SYSTEM, code)
        if item is not None:
            found[Rule.LOINC].add(item.code)
    if row.loinc and not found[Rule.LOINC]:
        bad = [c for c in row.loinc if not LOINC_CODE.match(c)]
        missed.append(
            f"LOINC {', '.join(row.loinc)} on no item"
            + (f" ({', '.join(bad)}: not a LOINC code)" if bad else "")
        )
    if row.charge_code:
        found[Rule.CHARGE_CODE] |= index.by_charge.get(row.charge_code, frozenset())
        if not found[Rule.CHARGE_CODE]:
            missed.append(f"charge code {row.charge_code} in no item's charge_codes")
    if row.name:
        found[Rule.NAME] |= index.by_name.get(_norm(row.name), frozenset())
        if not found[Rule.NAME]:
            missed.append(f"name {row.name!r} is no item's name")
    return found, missed


def _map_row(row: Row, index: _Index) -> Mapped | Unmapped:
    """The row's item (LOINC, else charge code, else exact Chinese name) and values.

    A row whose codes or rules point at two different items is ambiguous: nothing is
    applied for it.
    """
    if row.overflow:
        return Unmapped(
            row,
            Reason.MALFORMED_ROW,
            f"cells beyond the header's columns ({', '.join(row.overflow)}): an unquoted comma?",
        )
    found, missed = _candidates(row, index)
    items = set().union(*found.values())
    if len(items) > 1:
        why = "; ".join(
            f"{rule} → {', '.join(sorted(codes))}" for rule, codes in found.items() if codes
        )
        return Unmapped(row, Reason.AMBIGUOUS, f"maps to {len(items)} items: {why}")
    if not items:
        reason = (
            Reason.NO_LOINC_MATCH
            if row.loinc
            else Reason.UNKNOWN_CHARGE_CODE
            if row.charge_code
            else Reason.NAME_NOT_FOUND
        )
        return Unmapped(row, reason, "; ".join(missed) or "no LOINC, charge code or name")
    (code,) = items
    item = index.catalog.items[code]
    by = next(rule for rule in Rule if found[rule])
    wanted = category_of(row.category)
    if wanted is not None and wanted != _category(item):
        return Unmapped(
            row,
            Reason.CATEGORY_MISMATCH,
            f"类别 {row.category!r} is {wanted}, but {code} ({item.name_zh}) is {_category(item)}",
        )
    try:
        days = parse_days(row.validity_days)
    except ValueError as exc:
        return Unmapped(row, Reason.INVALID_DAYS, f"{code}: {exc}")
    fees: dict[str, Decimal] = {}
    for tier in TIERS:
        try:
            fee = parse_fee(row.fees.get(tier, ""))
        except ValueError as exc:
            return Unmapped(row, Reason.INVALID_FEE, f"{code}, tier {tier}: {exc}")
        if fee is not None:
            fees[tier] = fee
    if days is None and not fees:
        return Unmapped(row, Reason.INVALID_DAYS, f"{code}: no 互认时限 and no fee to import")
    return Mapped(row, code, by, days, fees)


def _category(item: CatalogItem) -> str:
    return "LAB" if item.kind in (ItemKind.LAB, ItemKind.PANEL) else item.category


def map_rows(rows: Iterable[Row], catalog: Catalog) -> Plan:
    """Map every row; rows that give one item different values are all set aside."""
    index = _Index.of(catalog)
    results = [_map_row(row, index) for row in rows]
    lines: dict[str, list[Mapped]] = {}
    for r in results:
        if isinstance(r, Mapped):
            lines.setdefault(r.item, []).append(r)
    clashing = {
        item
        for item, group in lines.items()
        if len({(m.validity_days, tuple(sorted(m.fees.items()))) for m in group}) > 1
    }
    mapped: list[Mapped] = []
    unmapped: list[Unmapped] = []
    for r in results:
        if isinstance(r, Unmapped):
            unmapped.append(r)
        elif r.item in clashing:
            others = [str(m.row.line) for m in lines[r.item] if m is not r]
            unmapped.append(
                Unmapped(
                    r.row,
                    Reason.DUPLICATE,
                    f"{r.item} is also on line {', '.join(others)} with other values",
                )
            )
        else:  # the same values on two rows are applied once
            mapped.append(r)
    return Plan(tuple(mapped), tuple(unmapped))


# ---------------------------------------------------------------------------- output


def source_document(
    document: str,
    *,
    region: str,
    issuer: str | None = None,
    url: str | None = None,
    published: str | None = None,
    note: str | None = None,
) -> dict[str, str]:
    """A `source` object of region.schema.json."""
    source = {"document": document, "issuer": issuer, "region": region[:6]}
    source.update({"date": published, "url": url, "note": note})
    return {k: v for k, v in source.items() if v}


def region_document(
    plan: Plan,
    *,
    region: str,
    name_zh: str,
    name_en: str,
    version: str,
    effective_from: date,
    source: Mapping[str, str],
) -> dict[str, Any]:
    """The override file (region.schema.json) for the mapped rows, in the file's order."""
    doc: dict[str, Any] = {
        "region": region,
        "name": {"zh": name_zh, "en": name_en},
        "version": version,
        "effective_from": effective_from.isoformat(),
        "source": dict(source),
    }
    days = plan.validity_days()
    if days:
        doc["validity_days"] = days
    fees = plan.fees()
    if fees:
        doc["fees"] = {
            item: {t: f"{tiers[t]:.2f}" for t in TIERS if t in tiers}
            for item, tiers in fees.items()
        }
    return doc


def schema_errors(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Where `doc` breaks the JSON Schema (draft 2020-12), one line each; empty when valid."""
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def changes(current: Catalog, plan: Plan) -> tuple[Change, ...]:
    """Windows and fees that differ from `current` (the catalog as the region sees it now)."""
    out: list[Change] = []
    done: set[str] = set()
    for m in plan.mapped:
        if m.item in done:
            continue
        done.add(m.item)
        item = current.items[m.item]
        if m.validity_days is not None and m.validity_days != item.validity_days:
            out.append(
                Change(
                    m.item,
                    item.name_zh,
                    "validity_days",
                    str(item.validity_days),
                    str(m.validity_days),
                    item.validity_source,
                )
            )
        for tier, fee in m.fees.items():
            old = item.fee(tier)
            if old != fee:
                out.append(
                    Change(
                        m.item,
                        item.name_zh,
                        f"fee:{tier}",
                        None if old is None else f"{old:.2f}",
                        f"{fee:.2f}",
                    )
                )
    return tuple(out)
