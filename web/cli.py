"""`blackboard`: serve, migrate, create, compact, token, export, import (DESIGN.md section 6)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from rich.progress import Progress

from blackboard.persistence.compaction import compact
from blackboard.persistence.errors import ProjectExists, ProjectNotFound, StoreError
from blackboard.persistence.factory import make_database, make_store
from blackboard.persistence.migrator import migrate
from blackboard.persistence.objects.object_store import ObjectStoreError
from blackboard.persistence.store import Store
from blackboard.schemas.document import is_valid_id
from blackboard.schemas.migration_files import migrations_for
from blackboard.schemas.money import BadAmount, is_currency, parse_amount
from blackboard.sync.projects.creation import create_project
from blackboard.sync.wire.yjs_structs import held_back
from blackboard.web import archive_cli
from blackboard.web.gc_tuning import tune_for_serving
from blackboard.web.logs import configure
from blackboard.web.malloc_tuning import return_large_blocks
from blackboard.web.open_files import raise_open_files
from blackboard.web.settings import Settings
from blackboard.web.tokens import ROLES, Keyring, mint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blackboard",
        description="CRDT sync server for film-production projects. Backends come from "
        "the environment (BLACKBOARD_DATABASE_URL, BLACKBOARD_REDIS_URL, ...); "
        "without them everything is embedded in --data-dir.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, help="embedded data folder (default ./blackboard-data)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the server")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")

    create = sub.add_parser("create", parents=[common], help="create a project")
    create.add_argument("project", help="project id")
    create.add_argument("--title", required=True)
    create.add_argument(
        "--budget", type=_amount, required=True, help="budget total, e.g. 25000 or 1999.95"
    )
    create.add_argument("--currency", type=_currency, default="USD")

    sub.add_parser(
        "migrate",
        parents=[common],
        help="apply pending database migrations (serve on Postgres refuses to start without)",
    )

    compact_cmd = sub.add_parser(
        "compact", parents=[common], help="fold update logs into snapshots"
    )
    which = compact_cmd.add_mutually_exclusive_group(required=True)
    which.add_argument("project", nargs="?", help="one project id")
    which.add_argument("--all", action="store_true", help="every project")

    archive_cli.add_commands(sub, common)

    token = sub.add_parser(
        "token", help="print an access token signed with BLACKBOARD_AUTH_SECRET's first key"
    )
    token.add_argument("project", help="project id, or * for every project")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--actor", required=True, help="who acts (recorded on every write)")
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="seconds valid (default 3600; <= 0: expired)"
    )
    return parser


def _amount(text: str) -> int:
    try:
        return parse_amount(text, "budget")
    except BadAmount as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _currency(text: str) -> str:
    if not is_currency(text):
        raise argparse.ArgumentTypeError(f"currency must be three uppercase letters, got {text!r}")
    return text


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings.from_env().with_overrides(
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )
    configure(settings.log_format, settings.log_level)
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        _migrate(settings)
    elif args.command == "create":
        _run_with_store(settings, lambda store: _create(store, args))
    elif args.command == "compact":
        _run_with_store(settings, lambda store: _compact(store, settings, args))
    elif args.command == "token":
        _token(settings, args)
    elif args.command == "export":
        _run_with_store(settings, lambda store: archive_cli.export_command(store, settings, args))
    elif args.command == "import":
        _run_with_store(settings, lambda store: archive_cli.import_command(store, settings, args))


def serve(settings: Settings) -> None:
    import uvicorn

    from blackboard.web.app import create_app
    from blackboard.web.transport import protocols

    if settings.database_url:
        # Refuse a database that is behind now, in one line, not as a startup traceback.
        _run_with_store(settings, _nothing)
    backend = "postgres" if settings.database_url else f"sqlite in {settings.data_dir}"
    print(f"Blackboard on http://{settings.host}:{settings.port} ({backend})", flush=True)
    print(f"  sync: ws://{settings.host}:{settings.port}/sync/{{project_id}}", flush=True)
    tune_for_serving()
    return_large_blocks()
    raise_open_files()  # sockets past the default 1,024 must not starve /healthz
    http, ws = protocols(settings.limits)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # httptools and the sans-I/O WebSocket implementation (which queues frames in
        # arrival order with the close last; the default one drops frames still unread
        # when the peer closes), with a header timeout and a per-address cap.
        http=http,
        ws=ws,
        ws_max_size=settings.limits.max_message_bytes,
        ws_ping_interval=settings.limits.ping_interval_s,
        ws_ping_timeout=settings.limits.ping_timeout_s,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        log_level=settings.log_level,
        log_config=None,
    )


def _fail(message: str) -> None:
    print(f"blackboard: {message}", file=sys.stderr)
    sys.exit(1)


def _token(settings: Settings, args: argparse.Namespace) -> None:
    if not settings.auth_secret:
        _fail("BLACKBOARD_AUTH_SECRET is not set (the server runs open and takes no tokens)")
    try:
        keyring = Keyring.parse(settings.auth_secret)
        print(mint(keyring, args.project, args.role, args.actor, args.ttl))
    except ValueError as exc:
        _fail(str(exc))


def _run_with_store(settings: Settings, work: Callable[[Store], Awaitable[None]]) -> None:
    async def run() -> None:
        store = make_store(settings.database_url, settings.data_dir, settings.database_pool_size)
        # Only the embedded SQLite migrates by itself; Postgres needs `blackboard migrate`.
        await store.open(migrate_schema=store.backend == "sqlite")
        try:
            await work(store)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except (StoreError, OSError, ObjectStoreError, archive_cli.CliError) as exc:
        _fail(str(exc))


async def _nothing(store: Store) -> None:
    pass


def _migrate(settings: Settings) -> None:
    async def run() -> None:
        db = make_database(settings.database_url, settings.data_dir, settings.database_pool_size)
        await db.open()
        try:
            applied = await migrate(db, apply=True)
        finally:
            await db.close()
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
        latest = migrations_for(db.dialect)[-1]
        print(f"{db.dialect} schema is up to date (version {latest.version:04d})")

    try:
        asyncio.run(run())
    except (StoreError, OSError) as exc:
        _fail(str(exc))


async def _create(store: Store, args: argparse.Namespace) -> None:
    if not is_valid_id(args.project):
        _fail(f"invalid project id {args.project!r}")
    try:
        record = await create_project(
            store, args.project, args.title, args.budget, args.currency, {}, actor="cli"
        )
    except ProjectExists as exc:
        _fail(str(exc))
    print(f"created {record.project_id}")


async def _compact(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    from datetime import timedelta

    retention = timedelta(seconds=settings.history_retention_s)
    # The CLI has no event loop to protect: the held check runs in a thread.
    held_check = partial(asyncio.to_thread, held_back)
    if args.all:
        ids, cursor = [], None
        while page := await store.list_projects(1000, cursor):
            ids.extend(p.project_id for p in page)
            cursor = page[-1].project_id
    else:
        ids = [args.project]
    with Progress(transient=True) as progress:
        bar = progress.add_task("compacting", total=len(ids))
        for project_id in ids:
            try:
                result = await compact(store, project_id, retention, held=held_check)
            except ProjectNotFound as exc:
                _fail(str(exc))
            if result.skipped:
                progress.print(f"{project_id}: skipped, {result.skipped}")
            else:
                progress.print(
                    f"{project_id}: snapshot at seq {result.upto_seq}, merged"
                    f" {result.merged_rows} rows, {result.snapshot_bytes} bytes,"
                    f" pruned {result.pruned_rows}"
                )
            progress.advance(bar)


if __name__ == "__main__":
    main()
