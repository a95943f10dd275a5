"""`mrb catalog import`: a province's or city's published item list as a regional override.

The list (CSV) is mapped onto catalog items and written to the data folder,
$MRB_DATA_DIR/catalog/regions/<region>.yaml, which the broker applies after the shipped
schemas/catalog/regions/ files (broker/reference/loader.py). The parsing and mapping are
pure functions in broker/reference/catalog_import.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.cli.state import StateMissing, announce, require_folder
from broker.reference import catalog_import as ci
from broker.reference.loader import ReferenceDataError, default_schemas_dir, load_catalog
from broker.settings import Settings

app = typer.Typer(help="The item catalog: regional lists in the data folder.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_BAD_INPUT = 2  # the file or an option cannot be used; nothing written
EXIT_UNMAPPED = 3  # some rows were not mapped; what mapped is written unless --strict
MAX_FILE_BYTES = 16 * 1024 * 1024  # a provincial list is a few hundred KiB
REGION = re.compile(r"^[1-9][0-9]([0-9]{2}){0,2}$")  # region.schema.json
SOURCE_DATE = re.compile(r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$")
URL = re.compile(r"^https?://")
REASON_LABELS = {
    ci.Reason.NO_LOINC_MATCH: "no LOINC match",
    ci.Reason.UNKNOWN_CHARGE_CODE: "unknown charge code",
    ci.Reason.NAME_NOT_FOUND: "name not found",
    ci.Reason.AMBIGUOUS: "ambiguous",
    ci.Reason.CATEGORY_MISMATCH: "category mismatch",
    ci.Reason.DUPLICATE: "duplicate item",
    ci.Reason.INVALID_DAYS: "invalid days",
    ci.Reason.INVALID_FEE: "invalid fee",
    ci.Reason.MALFORMED_ROW: "malformed row",
}


def _refuse(cause: str, fix: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(cause)}")
    err.print(f"fix: {fix}", markup=False)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="The list as CSV: UTF-8 (with or without BOM) or GB18030.")
    ],
    region: Annotated[
        str, typer.Option(help="GB/T 2260 prefix of the list's area: 42 (province), 5105 (city).")
    ],
    source_document: Annotated[
        str | None,
        typer.Option(
            help="Title and number of the published list, e.g. "
            "湖北省卫生健康委员会《关于…的通知》（鄂卫通〔2023〕56号）. Required unless --dry-run."
        ),
    ] = None,
    source_issuer: Annotated[
        str | None, typer.Option(help="Who published it, e.g. 湖北省卫生健康委员会.")
    ] = None,
    source_url: Annotated[str | None, typer.Option(help="Where it was read (http/https).")] = None,
    source_date: Annotated[
        str | None, typer.Option(help="The document's date: YYYY, YYYY-MM or YYYY-MM-DD.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Release of the list; default today as YYYY.MM.DD.")
    ] = None,
    effective_from: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Day the list takes effect; default today."),
    ] = None,
    name_zh: Annotated[
        str | None,
        typer.Option(help="Region name, e.g. 四川省; default the shipped file's, else the code."),
    ] = None,
    name_en: Annotated[
        str | None,
        typer.Option(help="Region name in English; default --name-zh, else the existing file's."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the report; write nothing.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Write nothing unless every row maps.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
    list_mapped: Annotated[
        bool, typer.Option("--list-mapped", help="Also list every mapped row.")
    ] = False,
) -> None:
    """Import a province's or city's item list (互认项目及时限, fees) for one region.

    Rows map to catalog items by LOINC, else 医保收费编码 (an item's charge_codes), else
    exact Chinese name. Mapped windows and fees go to $MRB_DATA_DIR/catalog/regions/
    <region>.yaml (replacing an earlier import), which wins over the shipped files; restart
    the broker to use it. Exit 0: every row mapped; 3: some did not (what mapped is still
    written unless --strict); 2: the file or an option is unusable (nothing written).
    """
    today = date.today()
    if not REGION.match(region):
        raise _refuse(
            f"--region {region!r} is not a GB/T 2260 prefix",
            "give 2 digits for a province (51), 4 for a city (5105) or 6 for a county (510502)",
        )
    _check_source(source_document, source_url, source_date, dry_run=dry_run)
    data = _read_file(file)
    try:
        parsed = ci.parse(data)
    except ci.ImportFileError as exc:
        raise _refuse(f"{file}: {exc.cause}", exc.fix) from None

    settings = Settings()
    announce(settings)
    try:  # the catalog overrides live in the broker's folder: never made here
        require_folder(settings)
    except StateMissing as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    schemas = settings.schemas_dir or default_schemas_dir()
    extra = settings.data_dir / "catalog"
    try:
        catalog = load_catalog(schemas, extra)
    except ReferenceDataError as exc:
        err.print(f"[red]error:[/red] the catalog does not load: {escape(str(exc))}")
        err.print("fix: correct or remove that file, then import again")
        raise typer.Exit(1) from None

    plan = ci.map_rows(parsed.rows, catalog)
    changed = ci.changes(catalog.for_region(region), plan)
    target = extra / "regions" / f"{region}.yaml"
    zh, en = _region_name(region, schemas, extra, name_zh, name_en)
    override: dict[str, Any] | None = None
    if source_document:
        source = ci.source_document(
            source_document,
            region=region,
            issuer=source_issuer,
            url=source_url,
            published=source_date,
            note=(
                f"Imported with `mrb catalog import` from {file.name} "
                f"(sha256 {hashlib.sha256(data).hexdigest()[:16]}, {parsed.encoding}) on "
                f"{today.isoformat()}: {len(plan.mapped)} of {plan.rows} rows applied."
            ),
        )
        override = ci.region_document(
            plan,
            region=region,
            name_zh=zh,
            name_en=en,
            version=version or today.strftime("%Y.%m.%d"),
            effective_from=effective_from.date() if effective_from else today,
            source=source,
        )
        _check_schema(override, schemas / "catalog" / "region.schema.json", "region")
    charges = _charge_mapping(plan, region, schemas)

    written: list[Path] = []
    if dry_run:
        held = "dry run: nothing written"
    elif strict and plan.unmapped:
        held = f"--strict: nothing written, {len(plan.unmapped)} row(s) not mapped"
    elif not plan.mapped:
        held = "nothing written: no row mapped"
    elif override is not None:  # always built here: a source document is required
        _write(target, _yaml(override, f"--region {region} {file.name}", today))
        written.append(target)
        if charges["written"]:
            path = extra / "mappings" / f"region-{region}.yaml"
            _write(path, _yaml(charges["document"], f"--region {region} {file.name}", today))
            written.append(path)
        held = ""

    if as_json:
        report = _report(file, region, parsed, plan, changed, charges, override, written)
        report.update(dry_run=dry_run, strict=strict, held=held or None)
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print(file, parsed, plan, changed, charges, written, held, list_mapped=list_mapped)
    if plan.unmapped:
        raise typer.Exit(EXIT_UNMAPPED)


def _check_source(
    document: str | None, url: str | None, published: str | None, *, dry_run: bool
) -> None:
    if document is None and not dry_run:
        raise _refuse(
            "a source document is required: every validity window must cite where it came from",
            "add --source-document '<title and number of the published list>' "
            "(and --source-issuer, --source-url), or preview with --dry-run",
        )
    if document is not None and len(document.strip()) < 4:
        raise _refuse(
            f"--source-document {document!r} is too short to name a document",
            "give the document's title and number, e.g. 《…通知》（鄂卫通〔2023〕56号）",
        )
    if url is not None and not URL.match(url):
        raise _refuse(f"--source-url {url!r} is not an http(s) address", "give the full URL")
    if published is not None and not SOURCE_DATE.match(published):
        raise _refuse(
            f"--source-date {published!r} is not a date", "use YYYY, YYYY-MM or YYYY-MM-DD"
        )


def _read_file(file: Path) -> bytes:
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _refuse(
                f"{file} is {size // (1024 * 1024)} MiB; an item list is far smaller",
                "check that this is the list exported as CSV",
            )
        return file.read_bytes()
    except FileNotFoundError:
        raise _refuse(f"{file}: no such file", "give the path of the CSV file") from None
    except IsADirectoryError:
        raise _refuse(f"{file} is a folder", "give the path of the CSV file") from None
    except OSError as exc:
        raise _refuse(f"{file}: {exc.strerror}", "check the path and its permissions") from None


def _region_name(
    region: str, schemas: Path, extra: Path, zh: str | None, en: str | None
) -> tuple[str, str]:
    """The names given, else those of the data folder's or the shipped file for the region."""
    for folder in (extra, schemas / "catalog"):
        path = folder / "regions" / f"{region}.yaml"
        try:
            name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if name.get("zh") and name.get("en"):
            return zh or str(name["zh"]), en or zh or str(name["en"])
    return zh or region, en or zh or region


def _check_schema(doc: dict[str, Any], schema: Path, what: str) -> None:
    errors = ci.schema_errors(doc, json.loads(schema.read_text(encoding="utf-8")))
    if errors:  # the importer built a file its own schema refuses: a bug, not the input's
        err.print(
            f"[red]error:[/red] the {what} file would not be schema-valid: {escape(errors[0])}"
        )
        err.print("fix: report this with the CSV file; nothing was written")
        raise typer.Exit(1)


def _charge_mapping(plan: ci.Plan, region: str, schemas: Path) -> dict[str, Any]:
    """The region-wide charge-code mapping, written only if mapping.schema.json allows it."""
    codes: dict[str, set[str]] = {}
    for m in plan.mapped:
        if m.row.charge_code:
            codes.setdefault(m.row.charge_code, set()).add(m.item)
    single = {code: next(iter(items)) for code, items in codes.items() if len(items) == 1}
    result: dict[str, Any] = {
        "rows": sum(1 for m in plan.mapped if m.row.charge_code),
        "system": f"urn:mrb:region:{region}:charge-code",
        "written": False,
        "why_not": None,
        "document": None,
    }
    if not single:
        result["why_not"] = "no mapped row carries a 医保收费编码"
        return result
    doc = {"hospital": "*", "mappings": [{"system": result["system"], "codes": single}]}
    schema = json.loads((schemas / "catalog" / "mapping.schema.json").read_text(encoding="utf-8"))
    errors = ci.schema_errors(doc, schema)
    if errors:
        result["why_not"] = (
            "mapping.schema.json takes only a registered hospital id and "
            "urn:mrb:hospital:<id>:<kind> systems, so a region-wide (hospital '*') mapping "
            f"would not load ({errors[0]})"
        )
    else:
        result.update(written=True, document=doc)
    return result


def _yaml(doc: dict[str, Any], args: str, today: date) -> str:
    head = (
        f"# Written by `mrb catalog import {args}` on {today.isoformat()}.\n"
        "# Import the list again to change it: edits by hand are lost on the next import.\n"
    )
    return head + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _report(
    file: Path,
    region: str,
    parsed: ci.ParsedFile,
    plan: ci.Plan,
    changed: tuple[ci.Change, ...],
    charges: dict[str, Any],
    override: dict[str, Any] | None,
    written: list[Path],
) -> dict[str, Any]:
    return {
        "file": str(file),
        "region": region,
        "encoding": parsed.encoding,
        "columns": dict(parsed.columns),
        "ignored_columns": list(parsed.ignored_columns),
        "rows_read": plan.rows,
        "mapped": len(plan.mapped),
        "mapped_by": plan.by_rule(),
        "not_mapped": len(plan.unmapped),
        "mapped_rows": [m.as_dict() for m in plan.mapped],
        "not_mapped_rows": [u.as_dict() for u in plan.unmapped],
        "changed": [c.as_dict() for c in changed],
        "charge_codes": {k: v for k, v in charges.items() if k != "document"},
        "override": override,
        "written": [str(p) for p in written],
    }


def _print(
    file: Path,
    parsed: ci.ParsedFile,
    plan: ci.Plan,
    changed: tuple[ci.Change, ...],
    charges: dict[str, Any],
    written: list[Path],
    held: str,
    *,
    list_mapped: bool,
) -> None:
    by = plan.by_rule()
    console.print(
        f"{escape(str(file))}: {plan.rows} rows read ({parsed.encoding}); "
        f"[green]{len(plan.mapped)} mapped[/green] (LOINC {by['loinc']}, "
        f"charge code {by['charge-code']}, name {by['name']}); "
        + (f"[red]{len(plan.unmapped)} not mapped[/red]" if plan.unmapped else "0 not mapped")
    )
    console.print(
        "columns: " + ", ".join(f"{f}={h}" for f, h in parsed.columns.items()),
        markup=False,
    )
    if parsed.ignored_columns:
        console.print("ignored columns: " + ", ".join(parsed.ignored_columns), markup=False)
    if list_mapped and plan.mapped:
        table = Table("line", "code", "name", "item", "by", "days", "fees 3/2/1", title="mapped")
        for m in plan.mapped:
            fees = "/".join(str(m.fees[t]) if t in m.fees else "-" for t in ci.TIERS)
            table.add_row(
                str(m.row.line),
                escape(m.row.code),
                escape(m.row.name),
                m.item,
                str(m.by),
                "-" if m.validity_days is None else str(m.validity_days),
                fees,
            )
        console.print(table)
    if plan.unmapped:
        table = Table("line", "code", "name", "reason", "detail", title="not mapped")
        for u in plan.unmapped:
            table.add_row(
                str(u.row.line),
                escape(u.row.code),
                escape(u.row.name),
                REASON_LABELS[u.reason],
                escape(u.detail),
            )
        console.print(table)
    if changed:
        table = Table("item", "name", "what", "old → new", "current source", title="changed")
        for c in changed:
            table.add_row(
                c.item,
                escape(c.name),
                c.what,
                f"{c.old or '-'} → {c.new}",
                escape(c.old_source or ("unverified default" if c.what == "validity_days" else "")),
            )
        console.print(table)
    elif plan.mapped:
        console.print("no window or fee differs from what the region uses now")
    if charges["rows"]:
        if charges["written"]:
            console.print(
                f"charge codes: {charges['rows']} mapped as {charges['system']}", markup=False
            )
        else:
            console.print(
                f"charge codes of {charges['rows']} row(s) left out: {charges['why_not']}",
                markup=False,
            )
    if held:
        console.print(held, markup=False)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    if written:
        console.print("restart the broker (mrb up, serve, worker) to use it")
