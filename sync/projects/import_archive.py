"""Importing an export archive (DESIGN.md section 9): checked whole first, then the
project created in one transaction.

Every check runs before anything is written: the manifest's format and version, the
archive's seal (the sha256 of all its bytes, so even a byte zip readers skip counts),
every member present (no more, no fewer) with the size and sha256 the manifest names (zip's
own CRC catches most damage first), the update's state vector and JSON equal to the
manifest's and `doc.json`, the budget well formed. Then the artifacts go to the object
store (under the new project's keys; until the project exists they are orphans the
sweep would remove) and the project is created with the archived document as its first
update, its budget account and one `import` ledger row, all in one transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pycrdt import Doc

from blackboard.persistence.errors import ProjectExists, StoreError
from blackboard.persistence.objects.artifact_keys import is_sha256, object_key
from blackboard.persistence.objects.object_store import CHUNK_BYTES, ObjectStore
from blackboard.persistence.store import Store
from blackboard.persistence.yrs_guard import YrsError, yrs_guard
from blackboard.schemas.document import is_valid_id
from blackboard.schemas.views import doc_to_json
from blackboard.sync.authority.ledger import account_importer
from blackboard.sync.projects.export_archive import (
    ARTIFACTS,
    BUDGET,
    DOC,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    REQUIRED,
    UPDATE,
    Progress,
    no_progress,
    seal_problem,
)
from blackboard.sync.wire.protocol import ProtocolError
from blackboard.sync.wire.yjs_encoding import decode_state_vector

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_WHOLE_MEMBER_BYTES = 1024 * 1024 * 1024  # the members read into memory (documents)
IMPORT_ACTOR = "import"


class ArchiveError(StoreError):
    """The archive is refused; nothing was created."""


@dataclass(frozen=True)
class Archive:
    path: Path
    manifest: dict[str, Any]
    update: bytes
    account: dict[str, Any]
    artifacts: list[tuple[str, str]]  # (artifact id, sha256) of each archived object


@dataclass(frozen=True)
class ImportResult:
    project_id: str
    seq: int  # of the exported document
    artifacts: int


def _damaged(exc: Exception) -> ArchiveError:
    return ArchiveError(f"the archive is damaged: {exc}")


def _read_manifest(file: zipfile.ZipFile) -> dict[str, Any]:
    try:
        info = file.getinfo(MANIFEST)
    except KeyError:
        raise ArchiveError(f"not an export archive: no {MANIFEST}") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(file.read(MANIFEST))
    except ValueError as exc:
        raise ArchiveError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"not an export archive: format is not {FORMAT!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"unknown format_version {version!r} (this version reads {FORMAT_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("size"), int) and is_sha256(v.get("sha256"))
        for v in files.values()
    ):
        raise ArchiveError(f"{MANIFEST} has no valid files list")
    for key in ("project_id", "title", "state_vector"):
        if not isinstance(manifest.get(key), str):
            raise ArchiveError(f"{MANIFEST} has no {key}")
    if not isinstance(manifest.get("seq"), int):
        raise ArchiveError(f"{MANIFEST} has no seq")
    return manifest


def _artifact_member(name: str) -> tuple[str, str]:
    parts = name[len(ARTIFACTS) :].split("/")
    if len(parts) != 2 or not is_valid_id(parts[0]) or not is_sha256(parts[1]):
        raise ArchiveError(f"unexpected member {name!r}")
    return parts[0], parts[1]


def _check(path: Path, progress: Progress) -> Archive:
    """Every check, in a worker thread; ArchiveError naming the first problem."""
    try:
        with zipfile.ZipFile(path) as file:
            manifest = _read_manifest(file)
            problem = seal_problem(path)
            if problem is not None:
                raise ArchiveError(f"the archive is damaged: {problem}")
            files: dict[str, dict[str, Any]] = manifest["files"]
            names = [n for n in file.namelist() if n != MANIFEST]
            if len(names) != len(set(names)):
                raise ArchiveError("a member appears twice")
            for name in REQUIRED:
                if name not in files:
                    raise ArchiveError(f"{MANIFEST} does not list {name}")
            for name in files:
                if name not in names:
                    raise ArchiveError(f"missing member {name}")
            for name in (UPDATE, DOC, BUDGET):  # read whole below
                if files[name]["size"] > MAX_WHOLE_MEMBER_BYTES:
                    raise ArchiveError(f"{name} is larger than {MAX_WHOLE_MEMBER_BYTES} bytes")
            artifacts = []
            for name in names:
                if name not in files:
                    raise ArchiveError(f"unexpected member {name!r}")
                if name.startswith(ARTIFACTS):
                    artifacts.append(_artifact_member(name))
            total = sum(f["size"] for f in files.values())
            done = 0
            for name in names:
                sha, size = hashlib.sha256(), 0
                with file.open(name) as member:
                    while chunk := member.read(CHUNK_BYTES):
                        sha.update(chunk)
                        size += len(chunk)
                        done += len(chunk)
                        progress("checking", done, total)
                want = files[name]
                if size != want["size"] or sha.hexdigest() != want["sha256"]:
                    raise ArchiveError(f"member {name} does not match its sha256 in {MANIFEST}")
            update = file.read(UPDATE)
            doc_json = json.loads(file.read(DOC))
            budget = json.loads(file.read(BUDGET))
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError) as exc:
        raise _damaged(exc) from None
    _check_document(manifest, update, doc_json)
    account = budget.get("account") if isinstance(budget, dict) else None
    units = account.get("units") if isinstance(account, dict) else None
    if (
        not isinstance(account, dict)
        or not isinstance(units, dict)
        or not all(isinstance(units.get(k), int) and units[k] >= 0 for k in ("total", "spent"))
        or units["spent"] > units["total"]
        or not isinstance(account.get("currency"), str)
        or not isinstance(account.get("version"), int)
    ):
        raise ArchiveError(f"{BUDGET} has no valid account")
    return Archive(path, manifest, update, account, sorted(artifacts))


def _check_document(manifest: dict[str, Any], update: bytes, doc_json: Any) -> None:
    doc = Doc()
    try:
        with yrs_guard:
            doc.apply_update(update)
    except YrsError as exc:
        raise ArchiveError(f"{UPDATE} does not apply: {exc}") from None
    # Compared decoded: the encoding's order of clients is not fixed.
    try:
        claimed = decode_state_vector(base64.b64decode(manifest["state_vector"], validate=True))
    except (ValueError, ProtocolError):
        raise ArchiveError(f"{MANIFEST} has a state_vector that does not decode") from None
    if decode_state_vector(doc.get_state()) != claimed:
        raise ArchiveError(f"{UPDATE} does not have the manifest's state vector")
    if doc_to_json(doc) != doc_json:
        raise ArchiveError(f"{UPDATE} and {DOC} differ")


async def read_archive(path: Path, progress: Progress = no_progress) -> Archive:
    try:
        return await asyncio.to_thread(_check, path, progress)
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None


async def _member_chunks(path: Path, name: str) -> AsyncIterator[bytes]:
    file = await asyncio.to_thread(zipfile.ZipFile, path)
    try:
        member: IO[bytes] = await asyncio.to_thread(file.open, name)
        try:
            while chunk := await asyncio.to_thread(member.read, CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(member.close)
    finally:
        await asyncio.to_thread(file.close)


async def import_archive(
    store: Store,
    objects: ObjectStore,
    path: Path,
    *,
    as_project: str | None = None,
    actor: str = IMPORT_ACTOR,
    progress: Progress = no_progress,
) -> ImportResult:
    """Recreate the archived project (as `as_project` if given). ArchiveError: refused,
    nothing created."""
    archive = await read_archive(path, progress)
    manifest = archive.manifest
    project_id = as_project or manifest["project_id"]
    if not is_valid_id(project_id):
        raise ArchiveError(f"invalid project id {project_id!r}")
    if await store.get_project(project_id) is not None:
        raise ArchiveError(f"project {project_id!r} already exists")
    for n, (artifact_id, sha) in enumerate(archive.artifacts, 1):
        name = f"{ARTIFACTS}{artifact_id}/{sha}"
        key = object_key(project_id, artifact_id, sha)
        stored = await objects.put(key, _member_chunks(path, name))
        if stored.sha256 != sha:  # the file changed under us since it was checked
            raise ArchiveError(f"member {name} changed while importing")
        progress("artifacts", n, len(archive.artifacts))
    account = archive.account
    units = account["units"]
    # The archived budget root shows `version`; an account that continues from it keeps
    # the document as archived. Open reservations are not carried: the account then
    # moves on a version, so the budget root is corrected to show none.
    version = account["version"]
    if units.get("reserved", 0) or version < 1:
        version += 1
    ref = f"{manifest['project_id']}@{manifest['seq']}"
    writer = account_importer(
        units["total"], units["spent"], account["currency"], version, ref, actor
    )
    try:
        await store.create_project(
            project_id, manifest["title"], archive.update, actor, with_rows=writer
        )
    except ProjectExists:
        raise ArchiveError(f"project {project_id!r} already exists") from None
    return ImportResult(project_id, manifest["seq"], len(archive.artifacts))
