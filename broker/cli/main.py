"""`mrb`: run the broker, manage hospitals, publish files, inspect the DLQ."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from broker.cli import adapter_cmd, dlq_cmd
from broker.cli.demo import run_demo
from broker.observability import configure_logging
from broker.runtime import install_signal_handlers, running_stack, wait_for_failure_or_stop
from broker.security.keys import load_or_create_key
from broker.security.payload_cipher import PayloadCipher
from broker.settings import Settings
from broker.storage import hospitals as registry
from broker.storage.database import upgrade

app = typer.Typer(
    help="mrb — cross-hospital test-result mutual-recognition broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
hospital_app = typer.Typer(help="The hospital registry.", no_args_is_help=True)
keys_app = typer.Typer(help="Key material in MRB_DATA_DIR/keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(hospital_app, name="hospital")
app.add_typer(keys_app, name="keys")
app.add_typer(adapter_cmd.app, name="adapter")
app.add_typer(dlq_cmd.app, name="dlq")

console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level)
    return settings


def _serve(*, api: bool, worker: bool) -> None:
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        async with running_stack(
            settings, api=api, worker=worker, kafka_needed=worker, stop=stop
        ) as stack:
            err.print(f"[green]mrb ready[/green] on {stack.api_url} (Ctrl-C to stop)")
            await wait_for_failure_or_stop(stack)

    _run(main())


@app.command()
def up() -> None:
    """Run everything in one process: broker (embedded unless MRB_KAFKA_BOOTSTRAP), worker, API."""
    _serve(api=True, worker=True)


@app.command()
def serve() -> None:
    """Run the HTTP API only (it reads the database; it does not need Kafka)."""
    _serve(api=True, worker=False)


@app.command()
def worker() -> None:
    """Run one ingest worker (scale out with more; they form one consumer group)."""
    settings = _settings()
    if not settings.kafka_bootstrap:
        err.print("[red]mrb worker needs MRB_KAFKA_BOOTSTRAP[/red] (or use `mrb up`).")
        raise typer.Exit(2)
    _serve(api=False, worker=True)


@app.command()
def demo(
    patients: Annotated[int, typer.Option(help="Synthetic patients to generate.")] = 240,
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop after the summary instead of serving.")
    ] = False,
) -> None:
    """Start the embedded stack, replay a multi-hospital sample, and keep serving."""
    settings = Settings()
    # The demo prints its own summary; per-message logs would drown it.
    configure_logging(settings.log_level if "log_level" in settings.model_fields_set else "WARNING")
    _run(run_demo(settings, patients=patients, keep_serving=not exit_after, console=console))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations (Alembic)."""
    settings = _settings()
    asyncio.run(upgrade(settings.resolved_database_url, settings.database_schema))
    console.print("database is at the latest schema")


@keys_app.command("init")
def keys_init() -> None:
    """Create the broker's keys (pseudonyms, payload encryption) if missing; never overwrite."""
    settings = _settings()
    keys = settings.keys_dir
    created = [p for p in (keys / "pseudonym.key", keys / "payload-k1.key") if not p.exists()]
    load_or_create_key(keys / "pseudonym.key")
    PayloadCipher.from_dir(keys, create=True)
    for p in created:
        console.print(f"created {p}")
    console.print(
        f"keys are in {keys}: back them up and never commit them; losing pseudonym.key "
        "means no identifier can be found again"
    )


@hospital_app.command("add")
def hospital_add(
    hospital_id: Annotated[str, typer.Argument(help="Registry id, e.g. H001.")],
    name: Annotated[str, typer.Option(help="Full name, e.g. 泸州市人民医院.")],
    region: Annotated[str, typer.Option(help="GB/T 2260 code, e.g. 510502.")],
    level: Annotated[str, typer.Option(help="1, 2 or 3 (一级/二级/三级).")],
    timezone: Annotated[str, typer.Option(help="Zone for timestamps sent without one.")] = (
        "Asia/Shanghai"
    ),
    replace: Annotated[bool, typer.Option(help="Update it if it exists.")] = False,
) -> None:
    """Register a hospital (messages from unregistered hospitals go to the DLQ)."""
    settings = _settings()
    if level not in ("1", "2", "3"):
        err.print("[red]--level must be 1, 2 or 3[/red]")
        raise typer.Exit(2)
    if not (region.isdigit() and len(region) in (2, 4, 6)):
        err.print("[red]--region must be a GB/T 2260 code of 2, 4 or 6 digits[/red]")
        raise typer.Exit(2)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        err.print(f"[red]unknown time zone {timezone!r}[/red] (use an IANA name)")
        raise typer.Exit(2) from None

    async def main() -> None:
        from broker.bootstrap import Container

        await upgrade(settings.resolved_database_url, settings.database_schema)
        container = Container.build(settings)
        try:
            async with container.sessions() as session, session.begin():
                await registry.add(
                    session,
                    registry.Hospital(hospital_id, name, region, level, timezone),
                    replace=replace,
                )
        finally:
            await container.close()

    try:
        asyncio.run(main())
    except registry.HospitalExists:
        err.print(f"[red]{hospital_id} is already registered[/red] (use --replace to update)")
        raise typer.Exit(1) from None
    console.print(f"registered {hospital_id}")


@hospital_app.command("list")
def hospital_list() -> None:
    """List registered hospitals."""
    settings = _settings()

    async def main() -> list[registry.Hospital]:
        from broker.bootstrap import Container

        await upgrade(settings.resolved_database_url, settings.database_schema)
        container = Container.build(settings)
        try:
            async with container.sessions() as session:
                return await registry.list_all(session)
        finally:
            await container.close()

    table = Table("id", "name", "region", "level", "timezone")
    for h in asyncio.run(main()):
        table.add_row(h.id, h.name, h.region, h.level, h.timezone)
    console.print(table)


def _run(coro: object) -> None:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        err.print("stopped")
    except Exception as exc:  # the CLI's one place to turn a failure into a clear exit
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
