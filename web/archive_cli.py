"""`blackboard export` and `blackboard import` (DESIGN.md sections 6 and 9): an archive
to or from a file or `s3://bucket/key`, with a progress bar on a terminal."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from blackboard.persistence.objects.object_store import ObjectStore, file_chunks, make_object_store
from blackboard.persistence.store import Store
from blackboard.sync.authority.ledger import BudgetLedger
from blackboard.sync.projects.export_archive import Progress as OnProgress
from blackboard.sync.projects.export_archive import write_export
from blackboard.sync.projects.import_archive import import_archive
from blackboard.web.settings import Settings, s3_from_env

S3_SCHEME = "s3://"


class CliError(Exception):
    """One line for the user; exit 1."""


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    export = sub.add_parser("export", parents=[common], help="write a project's archive")
    export.add_argument("project", help="project id")
    when = export.add_mutually_exclusive_group()
    when.add_argument("--at-seq", type=int, help="the state as of this seq")
    when.add_argument("--at-time", type=_moment, help="the state as of this ISO 8601 time")
    export.add_argument(
        "--with-artifacts", action="store_true", help="also archive the artifacts' bytes"
    )
    export.add_argument("--out", required=True, help="FILE or s3://bucket/key")

    imp = sub.add_parser("import", parents=[common], help="create a project from an archive")
    imp.add_argument("source", help="FILE or s3://bucket/key")
    imp.add_argument("--as", dest="as_project", help="create it under this project id")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _s3_location(url: str) -> tuple[ObjectStore, str]:
    """The store of the URL's bucket (endpoint and keys from the environment), and key."""
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    if not bucket or not key:
        raise CliError(f"{url!r} is not s3://bucket/key")
    config = s3_from_env(os.environ, bucket)
    if config is None:
        raise CliError("s3:// locations need BLACKBOARD_S3_ENDPOINT (and its keys)")
    return make_object_store(Path("."), config), key


@contextmanager
def _bar(what: str) -> Iterator[OnProgress]:
    """A progress callback drawing a bar on stderr when it is a terminal."""
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as p:
        task = p.add_task(what, total=None)

        def update(step: str, done: int, total: int | None) -> None:
            p.update(task, description=f"{what}: {step}", completed=done, total=total)

        yield update


async def _counted(
    chunks: AsyncIterator[bytes], progress: OnProgress, total: int
) -> AsyncIterator[bytes]:
    done = 0
    async for chunk in chunks:
        done += len(chunk)
        progress("uploading", done, total)
        yield chunk


async def export_command(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    objects = make_object_store(settings.data_dir, settings.s3)
    target = None
    if args.out.startswith(S3_SCHEME):
        target = _s3_location(args.out)
        await target[0].open()
    with tempfile.TemporaryDirectory(prefix="blackboard-export-") as tmp:
        out = Path(tmp) / "export.zip" if target else Path(args.out)
        with _bar(f"exporting {args.project}") as progress:
            result = await write_export(
                store,
                BudgetLedger(store.db),
                objects,
                args.project,
                out,
                at_seq=args.at_seq,
                at_time=args.at_time,
                with_artifacts=args.with_artifacts,
                progress=progress,
            )
            if target is not None:
                await target[0].put(target[1], _counted(file_chunks(out), progress, result.size))
    print(
        f"exported {result.project_id} at seq {result.seq} ({result.artifacts} artifacts,"
        f" {result.size} bytes, sha256 {result.sha256}) to {args.out}"
    )


async def import_command(store: Store, settings: Settings, args: argparse.Namespace) -> None:
    objects = make_object_store(settings.data_dir, settings.s3)
    await objects.open()
    with tempfile.TemporaryDirectory(prefix="blackboard-import-") as tmp, _bar("importing") as bar:
        path = Path(args.source)
        if args.source.startswith(S3_SCHEME):
            source, key = _s3_location(args.source)
            path = Path(tmp) / "import.zip"
            done = 0
            with path.open("wb") as file:
                async for chunk in source.get(key):
                    await asyncio.to_thread(file.write, chunk)
                    done += len(chunk)
                    bar("downloading", done, None)
        result = await import_archive(
            store, objects, path, as_project=args.as_project, progress=bar
        )
    print(
        f"imported {result.project_id} (seq {result.seq} of the export,"
        f" {result.artifacts} artifacts)"
    )
