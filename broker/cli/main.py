"""`mrb`: run the broker, manage hospitals, publish files, inspect the DLQ."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from broker.cli.lazy import Deferred
from broker.instance import ADMIN_LOCK_WAIT_SECONDS, Refused, lock_data_dir, sqlite_file_in

if TYPE_CHECKING:
    import asyncio

    from broker.settings import Settings

# Every sub-command but the few defined here is imported when it runs: `mrb --help` and
# a light command (`mrb token issue`) do not pay for FastAPI, aiokafka, fhir.resources,
# pydicom… (tests/e2e/test_cli_start.py). One line per sub-command: name, where it is,
# and the one-line help `mrb --help` shows for it.
commands = Deferred()
commands.add(
    "backup",
    "broker.cli.backup_cmd:backup",
    "Back up the database (not the keys) to DEST, while mrb keeps running: SQLite's online "
    "backup, or pg_dump --format=custom of MRB_DATABASE_SCHEMA. Prints the keys the backup "
    "needs: back up MRB_DATA_DIR/keys separately.",
)
commands.add(
    "restore",
    "broker.cli.backup_cmd:restore",
    "Replace the database with a backup, then migrate it to this version's schema.",
)
commands.add("hospital", "broker.cli.hospital_cmd:app", "The hospital registry.")
commands.add("adapter", "broker.cli.adapter_cmd:app", "Hospital-side adapters.")
commands.add(
    "dlq",
    "broker.cli.dlq_cmd:app",
    "Dead letters: rejected messages kept in the broker's database (and on "
    "mrb.results.dlq.v1); list, replay after a fix, purge old values.",
)
commands.add("token", "broker.cli.token_cmd:app", "API bearer tokens.")
commands.add(
    "user",
    "broker.cli.user_cmd:app",
    "People who log in: local accounts (add, reset, disable --username) and those of "
    "the OpenID Connect issuer, MRB_OIDC_ISSUER (map, disable --subject).",
)
commands.add(
    "mapping", "broker.cli.mapping_cmd:app", "Local-code mappings and the unmapped-code worklist."
)
commands.add(
    "catalog", "broker.cli.catalog_cmd:app", "The item catalog: regional lists in the data folder."
)
commands.add("cds", "broker.cli.cds_cmd:app", "CDS Hooks clients: EHRs, their JWT issuer and keys.")
commands.add("audit", "broker.cli.audit_cmd:app", "The audit trail's hash chain.")
commands.add("report", "broker.cli.report_cmd:app", "Finance and regulator reports.")
commands.add(
    "patient",
    "broker.cli.patient_cmd:app",
    "A patient's rights (who read their data); identity across hospitals (review, link, unlink).",
)
commands.add(
    "consent",
    "broker.cli.consent_cmd:app",
    "A patient's consent and opt-out of sharing; the break-glass report.",
)
commands.add(
    "ledger", "broker.cli.report_cmd:ledger_app", "The savings ledger's accounting months."
)
commands.add("bench", "broker.cli.bench_cmd:app", "Benchmark data (never on a production index).")
commands.add("purge", "broker.cli.purge_cmd:app", "Erase data past its retention period.")

key_commands = Deferred()
key_commands.add(
    "show-receipt-key",
    "broker.cli.receipt_key_cmd:show_receipt_key",
    "Print the broker's receipt public key(s) as KID=BASE64, the signing one first: what "
    "adapters trust (MRB_RECEIPT_PUBLIC_KEYS, --receipt-key, or the file "
    "keys/receipt-signing.pub copied into their MRB_DATA_DIR/keys).",
)
key_commands.add(
    "rotate-receipt-key",
    "broker.cli.receipt_key_cmd:rotate",
    "Make a new receipt key. Workers sign with it once restarted; keys/receipt-signing.pub "
    "then lists the new key and the previous one, so adapters given that file trust both.",
)
key_commands.add(
    "rotate",
    "broker.cli.keys_rotation:rotate",
    "Make a new payload key active and re-seal stored data under it.",
)
key_commands.add(
    "reencrypt",
    "broker.cli.keys_rotation:reencrypt",
    "Re-seal every stored row still under an older payload key (resumable).",
)
key_commands.add(
    "usage", "broker.cli.keys_rotation:usage", "How many stored rows each payload key still seals."
)

app = typer.Typer(
    help="mrb — cross-hospital test-result mutual-recognition broker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=commands.group(),
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Key material in MRB_DATA_DIR/keys.", no_args_is_help=True, cls=key_commands.group()
)
issuer_app = typer.Typer(
    help="The API token issuer's key (issuing host) and the public keys API hosts trust.",
    no_args_is_help=True,
)
keys_app.add_typer(issuer_app, name="token-issuer")
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)

# Files mrb creates (database, keys, logs, exports) are readable by their owner only.
PRIVATE_UMASK = 0o077


@app.callback()
def _start(
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            envvar="MRB_QUIET",
            help="Do not print the data folder and database an admin command acts on.",
        ),
    ] = False,
) -> None:
    # Runs before every command. No docstring: it would replace the app's help text.
    os.umask(PRIVATE_UMASK)
    # broker.cli.state (Alembic, SQLAlchemy) starts out not quiet: it is imported here
    # only to change that, or to reset it (several invocations in one process, as tests do).
    if quiet or "broker.cli.state" in sys.modules:
        from broker.cli import state

        state.set_quiet(quiet)


def _settings() -> Settings:
    from broker.logging_setup import configure_logging
    from broker.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings=settings)
    return settings


def _existing_keys_folder() -> Settings:
    """Settings for a command on the keys folder that must already exist (exit 2 if not)."""
    from broker.cli import state

    settings = _settings()
    state.announce(settings)
    try:
        state.require_folder(settings)
        if not settings.keys_dir.is_dir():
            raise state.StateMissing(
                f"no keys folder {settings.keys_dir.resolve()}: run `mrb keys init` first "
                "(or set MRB_DATA_DIR to the broker's folder)"
            )
    except state.StateMissing as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    return settings


def _serve(
    *,
    api: bool,
    worker: bool,
    processes: int = 1,
    child: int | None = None,
    listen_fd: int | None = None,
) -> None:
    from broker.runtime import install_signal_handlers, running_stack, wait_for_failure_or_stop

    settings = _settings()
    if processes > 1:
        _supervise(settings, "serve" if api else "worker", processes, api=api)
        return
    if worker:
        from broker.ingest.worker import settle_heap_once_warm

        settle_heap_once_warm()  # this process is the worker's

    async def main() -> None:
        import asyncio

        from broker.cli.processes import Child, child_claim

        stop = asyncio.Event()
        install_signal_handlers(stop)
        claimed = (
            child_claim(settings, Child(child, listen_fd), api=api) if child is not None else None
        )
        try:
            async with running_stack(
                settings, api=api, worker=worker, kafka_needed=worker, stop=stop, claimed=claimed
            ) as stack:
                who = f" (process {child})" if child is not None else ""
                err.print(f"[green]mrb ready[/green]{who} on {stack.api_url} (Ctrl-C to stop)")
                await wait_for_failure_or_stop(stack)
        finally:
            if claimed is not None:
                claimed.release()

    _run(main())


def _supervise(settings: Settings, command: str, processes: int, *, api: bool) -> None:
    from broker.cli.processes import supervise

    try:
        code = supervise(settings, command, processes, api=api)
    except Refused as exc:  # a busy data folder or port: nothing was started or changed
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)


# Set by `--workers`/`--processes` on the children they start; not for operators.
ChildOption = Annotated[int | None, typer.Option("--child", hidden=True)]
ListenFdOption = Annotated[int | None, typer.Option("--listen-fd", hidden=True)]


P = ParamSpec("P")
R = TypeVar("R")


def _holding_data_dir(
    command: str, *, sqlite_only: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """An admin command that creates the broker's database or keys in the data folder
    holds the folder's lock while it runs: it waits a few seconds for another to finish,
    then stops (exit 2) naming the holder. `sqlite_only`: only when the database is a
    SQLite file in that folder."""

    def wrap(run: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(run)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            from broker.settings import Settings

            settings = Settings()
            if sqlite_only and not sqlite_file_in(settings):
                return run(*args, **kwargs)
            try:
                lock = lock_data_dir(settings.data_dir, command, wait=ADMIN_LOCK_WAIT_SECONDS)
            except Refused as exc:
                err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
                raise typer.Exit(2) from None
            try:
                return run(*args, **kwargs)
            finally:
                lock.release()

        return locked

    return wrap


@app.command()
def up() -> None:
    """Run everything in one process: broker (embedded unless MRB_KAFKA_BOOTSTRAP), worker, API."""
    _serve(api=True, worker=True)


@app.command()
def serve(
    workers: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port (one per core).")
    ] = 1,
    child: ChildOption = None,
    listen_fd: ListenFdOption = None,
) -> None:
    """Run the HTTP API only (it reads the database; it does not need Kafka)."""
    _serve(api=True, worker=False, processes=workers, child=child, listen_fd=listen_fd)


@app.command()
def worker(
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes in the one consumer group (at most the partitions of "
            "mrb.results.v1).",
        ),
    ] = 1,
    child: ChildOption = None,
) -> None:
    """Run ingest workers (scale out with more; they form one consumer group)."""
    settings = _settings()
    if not settings.kafka_bootstrap:
        err.print("[red]mrb worker needs MRB_KAFKA_BOOTSTRAP[/red] (or use `mrb up`).")
        raise typer.Exit(2)
    _serve(api=False, worker=True, processes=processes, child=child)


@app.command()
def demo(
    patients: Annotated[int, typer.Option(help="Synthetic patients to generate.")] = 240,
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop after the summary instead of serving.")
    ] = False,
) -> None:
    """Start the embedded stack, replay a multi-hospital sample, and keep serving."""
    from broker.cli.demo import run_demo
    from broker.logging_setup import configure_logging
    from broker.settings import Settings

    settings = Settings()
    # The demo prints its own summary; per-message logs would drown it.
    configure_logging(
        settings.log_level if "log_level" in settings.model_fields_set else "WARNING",
        settings=settings,
    )
    _run(run_demo(settings, patients=patients, keep_serving=not exit_after, console=console))


@db_app.command("upgrade")
@_holding_data_dir("mrb db upgrade", sqlite_only=True)
def db_upgrade() -> None:
    """Apply all database migrations (Alembic)."""
    import asyncio

    from broker.cli import state
    from broker.runtime import private_sqlite_file
    from broker.storage.database import upgrade

    settings = _settings()
    state.announce(settings)
    private_sqlite_file(settings.resolved_database_url)
    asyncio.run(upgrade(settings.resolved_database_url, settings.database_schema))
    console.print("database is at the latest schema")
    sealed = asyncio.run(_seal_legacy_rows(settings))
    if sealed:
        console.print(f"sealed the clinical text and business identifiers of {sealed} rows")


async def _seal_legacy_rows(settings: Settings) -> int:
    """Rows indexed before clinical text was sealed: seal them now (needs the keys)."""
    from broker.bootstrap import Container
    from broker.storage.database import create_engine, session_factory
    from broker.storage.protect import Protector, has_legacy_rows, seal_legacy_rows

    engine = create_engine(settings.resolved_database_url, schema=settings.database_schema)
    try:
        async with session_factory(engine)() as s:
            if not await has_legacy_rows(s):
                return 0
    finally:
        await engine.dispose()
    container = Container.build(settings)
    try:
        async with container.sessions() as s, s.begin():
            return await seal_legacy_rows(s, Protector(container.cipher, container.pseudonyms))
    finally:
        await container.close()


@keys_app.command("init")
@_holding_data_dir("mrb keys init")
def keys_init(
    hospital: Annotated[
        str | None,
        typer.Option(help="Create a hospital's Ed25519 signing key (adapter side) instead."),
    ] = None,
) -> None:
    """Create the broker's keys (pseudonyms, payload encryption, the token issuer's) if
    missing; never overwrite.

    With --hospital, create a new signing key for that hospital's adapters (a rotation when
    one exists: older keys stay, so messages signed with them still verify on replay).
    """
    from adapters.common.signing import create_key
    from broker.cli import receipt_key_cmd, state
    from broker.security.keys import load_or_create_key
    from broker.security.payload_cipher import PayloadCipher
    from broker.security.tokens import ISSUER_KEY_FILE, PUBLIC_KEYS_FILE, load_issuer_key

    settings = _settings()
    state.announce(settings)
    keys = settings.keys_dir
    if hospital is not None:
        key_id, public = create_key(keys, hospital)
        console.print(f"created signing key {key_id} in {keys / 'hospitals' / hospital}")
        console.print("register it at the broker (it is public; the .pem never leaves here):")
        console.print(
            f"  mrb hospital key add {hospital} --key-id {key_id} --public-key {public}",
            soft_wrap=True,
        )
        return
    created = [
        p
        for p in (
            keys / "pseudonym.key",
            keys / "payload-k1.key",
            keys / "fhir-cursor.key",
            keys / "audit-checkpoint.key",
            keys / ISSUER_KEY_FILE,
        )
        if not p.exists()
    ]
    for name in ("pseudonym.key", "fhir-cursor.key", "audit-checkpoint.key"):
        load_or_create_key(keys / name)
    PayloadCipher.from_dir(keys, create=True)
    issuer = load_issuer_key(keys, create=True)
    for p in created:
        console.print(f"created {p}")
    console.print(
        f"keys are in {keys}: back them up and never commit them; losing pseudonym.key "
        "means no identifier can be found again"
    )
    console.print(
        f"{ISSUER_KEY_FILE} (token issuer {issuer.key_id}) stays on this, the issuing host: "
        f"give API hosts {PUBLIC_KEYS_FILE} (or MRB_TOKEN_PUBLIC_KEYS) and every other file, "
        "never the issuer key",
        soft_wrap=True,
    )
    receipt_key_cmd.init_key(keys, console)


@issuer_app.command("show")
def issuer_show() -> None:
    """Print the trusted public keys (KID=BASE64), for API hosts' MRB_TOKEN_PUBLIC_KEYS."""
    from broker.security.tokens import ISSUER_KEY_FILE, IssuerKey, TrustedKeys, public_key_b64

    settings = _existing_keys_folder()
    keys = TrustedKeys(settings.token_public_keys_path, settings.token_public_keys)
    issuing = settings.keys_dir / ISSUER_KEY_FILE
    current = (
        IssuerKey.from_pem(issuing.read_bytes(), source=str(issuing)).key_id
        if issuing.exists()
        else None
    )
    for kid in keys.key_ids():
        public = keys.get(kid)
        if public is not None:
            mark = "  # issues here" if kid == current else ""
            console.print(f"{kid}={public_key_b64(public)}{mark}", soft_wrap=True, highlight=False)


@issuer_app.command("rotate")
def issuer_rotate() -> None:
    """Make a new issuer key: new tokens are signed with it; the old public key stays
    trusted here until `retire` (tokens it signed live at most MRB_TOKEN_MAX_TTL_MACHINES)."""
    from broker.security.keys import MissingKey
    from broker.security.tokens import rotate_issuer_key

    settings = _existing_keys_folder()
    try:
        old, new = rotate_issuer_key(settings.keys_dir)
    except MissingKey as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    console.print(f"token issuer {old.key_id} -> {new.key_id}; trust the new key on every API host")
    console.print(f"  {new.public_entry()}", soft_wrap=True, highlight=False)
    console.print(
        f"then, once {old.key_id}'s tokens have expired: mrb keys token-issuer retire {old.key_id}"
    )


@issuer_app.command("retire")
def issuer_retire(kid: Annotated[str, typer.Argument(help="The key id to stop trusting.")]) -> None:
    """Stop trusting an issuer public key here: tokens it signed are refused at once."""
    from broker.security.tokens import retire_public_key

    settings = _existing_keys_folder()
    try:
        removed = retire_public_key(settings.keys_dir, kid)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not removed:
        err.print(f"{kid} is not in {settings.token_public_keys_path}")
        raise typer.Exit(1)
    console.print(f"retired {kid} from {settings.token_public_keys_path}")


def _event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (a dependency, except on Windows): the API and
    the worker run their sockets, timers and callbacks in C. uvicorn picks it by itself only
    when it owns the loop (`uvicorn.run`); here the stack owns it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    return uvloop.new_event_loop


def _run(coro: object) -> None:
    import asyncio  # not at start: `mrb --help` and a command that does not run a loop

    try:
        with asyncio.Runner(loop_factory=_event_loop()) as runner:
            runner.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        err.print("stopped")
    except Refused as exc:  # a busy data folder or port: nothing was started or changed
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # the CLI's one place to turn a failure into a clear exit
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
