"""`make bench`: `python -m benchmarks` measures ingest and checks, each figure against a
baseline of the same run, writes bench/report.json and prints the table (markdown).

Sections (MRB_BENCH_SECTIONS): `ingest` (benchmarks.ingest_bench) and `check`
(benchmarks.check_bench), on each database of MRB_BENCH_DATABASES, and `cli`
(benchmarks.cli_bench, SQLite); sizes and rounds in benchmarks.config.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import check_bench, cli_bench, config, ingest_bench
from benchmarks.check_bench import SizeResult, per_round, throughput
from benchmarks.config import BenchConfig
from benchmarks.databases import Db, database
from benchmarks.procs import MRB, has_option
from benchmarks.report import Figure, Report

MB = 1024 * 1024


def size_label(results: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if results >= unit and results % unit == 0:
            return f"{results // unit}{name}"
    return str(results)


async def ingest_section(cfg: BenchConfig, report: Report, work: Path) -> None:
    for kind in cfg.databases:
        async with database(kind, work / f"ingest-{kind}", cfg.pg_url) as db:
            await ingest_bench.register(db)
            async with ingest_bench.kafka(db) as bootstrap:
                async with ingest_bench.worker(db, bootstrap) as w:
                    one = await ingest_bench.measure(
                        db, bootstrap, w, rounds=cfg.rounds, patients=cfg.ingest_patients, seed=100
                    )
                report.add(
                    Figure(
                        "ingest",
                        f"{kind}: 1 worker, messages per worker CPU-second",
                        "msg/CPU-s",
                        one.per_cpu_second,
                        "fhir.resources validation alone, msg/CPU-s",
                        one.reference,
                        config.INGEST_ONE_WORKER,
                        note=f"{one.messages} messages; wall "
                        f"{min(one.per_wall_second):.0f}–{max(one.per_wall_second):.0f} msg/s",
                        extra={"per_wall_second": one.per_wall_second},
                    )
                )
                report.facts[f"worker RSS max MB ({kind}, 1 worker)"] = round(one.rss_max / MB, 1)
                if not cfg.scale_out:
                    continue
                if not has_option(["worker"], "--processes", db.env()):
                    report.notes.append(
                        f"{kind}: `mrb worker --processes` does not exist yet: the two-process "
                        "ingest figure (target ≥ 2 × the reference) was not measured"
                    )
                    continue
                async with ingest_bench.worker(db, bootstrap, processes=2) as w:
                    two = await ingest_bench.measure(
                        db, bootstrap, w, rounds=cfg.rounds, patients=cfg.ingest_patients, seed=200
                    )
                report.add(
                    Figure(
                        "ingest",
                        f"{kind}: `mrb worker --processes 2`, messages per wall second",
                        "msg/s",
                        two.per_wall_second,
                        "fhir.resources validation alone, msg/CPU-s",
                        two.reference,
                        config.INGEST_TWO_PROCESSES,
                        note=f"{two.messages} messages on both cores; "
                        f"{min(two.per_cpu_second):.0f}–{max(two.per_cpu_second):.0f} "
                        "msg per worker CPU-second",
                        extra={"per_cpu_second": two.per_cpu_second},
                    )
                )


def size_figures(report: Report, kind: str, r: SizeResult, cfg: BenchConfig) -> None:
    at = f"{kind} {r.label}"
    pg_gate = kind == "postgres" and r.results >= 1_000_000
    for q, target in ((50, config.CHECK_P50_MS), (99, config.CHECK_P99_MS)):
        report.add(
            Figure(
                "check",
                f"{at}: check p{q}, 1 client",
                "ms",
                per_round(r.single, "check", q),
                f"person lookup p{q}",
                per_round(r.single, "lookup", q),
                target if pg_gate else None,
            )
        )
    report.add(
        Figure(
            "check",
            f"{at}: check p99, {cfg.concurrency} clients",
            "ms",
            per_round(r.concurrent, "check", 99),
            "person lookup p99",
            per_round(r.concurrent, "lookup", 99),
        )
    )
    report.add(
        Figure(
            "check",
            f"{at}: checks per second, {cfg.concurrency} clients, 1 process",
            "checks/s",
            throughput(r.concurrent, "check"),
            "person lookups/s",
            throughput(r.concurrent, "lookup"),
            note=f"load generator CPU {r.loadgen_cpu:.1f} s over all jobs at this size",
        )
    )
    report.add(
        Figure(
            "check",
            f"{at}: patient with {cfg.big_patient_results} results, check p50",
            "ms",
            per_round(r.big, "big", 50),
            f"patient with {cfg.results_per_person} results p50",
            per_round(r.big, "small", 50),
            config.BIG_PATIENT,
        )
    )
    report.add(
        Figure(
            "cds-fhir",
            f"{at}: CDS Hooks order-select p99, {cfg.bounded} clients",
            "ms",
            per_round(r.bounded, "cds", 99),
            "person lookup p99",
            per_round(r.bounded, "lookup", 99),
            config.CDS_P99_MS,
        )
    )
    report.add(
        Figure(
            "cds-fhir",
            f"{at}: FHIR Observation search p99, {cfg.bounded} clients",
            "ms",
            per_round(r.bounded, "fhir", 99),
            "person lookup p99",
            per_round(r.bounded, "lookup", 99),
        )
    )
    report.facts[f"{at}"] = {
        "results": r.results,
        "disk MB": round(r.disk_bytes / MB, 1),
        "disk MB per million results": round(r.disk_bytes / MB / max(r.results, 1) * 1e6, 1),
        "API RSS max MB per job": [round(x / MB, 1) for x in r.api_rss],
        "bulk load seconds": r.load_seconds,
        "load generator CPU seconds": round(r.loadgen_cpu, 2),
        "verified": r.verified,
    }


def growth_figures(report: Report, kind: str, first: SizeResult, last: SizeResult) -> None:
    span = f"{kind} {last.label} vs {first.label}"
    report.add(
        Figure(
            "growth",
            f"{span}: check p99, 1 client",
            "ms",
            per_round(last.single, "check", 99),
            f"check p99 at {first.label}",
            per_round(first.single, "check", 99),
            config.P99_GROWTH,
            note="issue #16 sets this for 10M vs 100k (make bench-large)",
        )
    )
    report.add(
        Figure(
            "growth",
            f"{span}: API RSS under load (largest of each job)",
            "MB",
            [x / MB for x in last.api_rss],
            f"API RSS at {first.label}",
            [x / MB for x in first.api_rss],
            config.RSS_GROWTH,
        )
    )


async def check_section(cfg: BenchConfig, report: Report, work: Path) -> None:
    """Every database grows through the sizes; at each size the databases are loaded side
    by side (one `mrb bench load` process each), then measured one after the other."""
    async with contextlib.AsyncExitStack() as stack:
        dbs = [
            await stack.enter_async_context(
                database(k, work / f"check-{k}", cfg.pg_url, keep=cfg.keep_schema)
            )
            for k in cfg.databases
        ]
        done: dict[str, list[SizeResult]] = {db.kind: [] for db in dbs}
        tokens: dict[str, str] = {}
        start = 0
        for size in cfg.sizes:
            people = max(1, size // cfg.results_per_person)
            loads = await asyncio.gather(
                *(check_bench.load(cfg, db, start, people, big=start == 0) for db in dbs)
            )
            start = people
            for db, loaded in zip(dbs, loads, strict=True):
                if db.kind not in tokens:
                    tokens[db.kind] = await check_bench.prepare_callers(db)
                r = await check_bench.measure_size(
                    cfg, db, size_label(size), people, tokens[db.kind], work, loaded
                )
                size_figures(report, db.kind, r, cfg)
                done[db.kind].append(r)
                print(f"[bench] {db.kind} {r.label}: measured", file=sys.stderr, flush=True)
        for db in dbs:
            results = done[db.kind]
            if len(results) > 1:
                growth_figures(report, db.kind, results[0], results[-1])
            await limits_on(cfg, report, db, results[-1], tokens[db.kind], start, work)
            await serve_workers(cfg, report, db, results[-1], tokens[db.kind], start, work)


async def limits_on(
    cfg: BenchConfig, report: Report, db: Db, last: SizeResult, token: str, people: int, work: Path
) -> None:
    """The check as production runs it, at the largest size: the rate limits on (the other
    figures turn them off, to measure the check alone)."""
    result = await check_bench.with_limits(cfg, db, people, token, work)
    pg_gate = db.kind == "postgres" and last.results >= 1_000_000
    report.add(
        Figure(
            "check",
            f"{db.kind} {last.label}: check p50, 1 client, rate limits on",
            "ms",
            per_round(result, "check", 50),
            "person lookup p50, limits on",
            per_round(result, "lookup", 50),
            config.CHECK_P50_MS if pg_gate else None,
            note="each request takes a hit on its token and address, each check counts its "
            "patient: what a production check pays (the limits set never to refuse)",
        )
    )


async def serve_workers(
    cfg: BenchConfig, report: Report, db: Db, last: SizeResult, token: str, people: int, work: Path
) -> None:
    """Checks/s with `mrb serve --workers 2`, when that option exists, at the largest size."""
    if not cfg.scale_out:
        return
    if not has_option(["serve"], "--workers", db.env()):
        report.notes.append(
            f"{db.kind}: `mrb serve --workers` does not exist yet: checks/s with two API "
            "processes (target ≥ 1,000) was not measured; the one-process figure is in the table"
        )
        return
    async with check_bench.running_api(db, work, [*MRB, "serve", "--workers", "2"]) as api:
        result = await check_bench.run_job(
            check_bench.throughput_job(cfg, api.base, token, people), work
        )
    report.add(
        Figure(
            "check",
            f"{db.kind} {last.label}: checks per second, `mrb serve --workers 2`, "
            f"{cfg.concurrency} clients",
            "checks/s",
            throughput(result, "check"),
            "1 process checks/s",
            throughput(last.concurrent, "check"),
            config.CHECKS_PER_SECOND,
        )
    )


def cli_section(cfg: BenchConfig, report: Report, work: Path) -> None:
    r = cli_bench.measure(work, cfg.rounds, cfg.cli_runs)
    runs = f"median of {cfg.cli_runs} runs a round, bytecode written"
    report.add(
        Figure(
            "cli",
            "`mrb token issue` (SQLite), wall",
            "s",
            r.issue,
            "its libraries imported alone",
            r.libraries,
            config.CLI_START_S,
            note=runs,
        )
    )
    report.add(
        Figure(
            "cli", "`mrb --help`, wall", "s", r.help, "`python -c pass`", r.bare, config.CLI_START_S
        )
    )
    report.facts["machine speed: 2M-step Python loop, s (per cli round)"] = [
        round(x, 3) for x in r.loop
    ]


async def main() -> None:
    cfg = BenchConfig()
    report = Report(cfg.as_json())
    started = time.perf_counter()
    if cfg.work_dir is not None:  # a folder named by MRB_BENCH_WORK_DIR may not exist yet
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mrb-bench-", dir=cfg.work_dir) as tmp:
        work = Path(tmp)
        if "ingest" in cfg.sections:
            await ingest_section(cfg, report, work)
            print("[bench] ingest: measured", file=sys.stderr, flush=True)
        if "check" in cfg.sections:
            await check_section(cfg, report, work)
        if "cli" in cfg.sections:
            await asyncio.to_thread(cli_section, cfg, report, work)
    report.facts["bench seconds"] = round(time.perf_counter() - started, 1)
    report.write(cfg.report)
    print(report.table())
    print()
    for key, value in report.facts.items():
        print(f"- {key}: {value}")
    for note in report.notes:
        print(f"- note: {note}")
    print(f"\nreport: {cfg.report}")


if __name__ == "__main__":
    asyncio.run(main())
