"""Where an artifact's bytes live in the object store, and which entries of the
`artifacts` root name stored objects (shared by uploads, sweeps, exports and imports).

The object key holds the content's hash (`projects/{project}/artifacts/{artifact}/
{sha256}`), so different bytes under one id never overwrite each other. An entry's
`key` is relative to its project (`artifacts/{artifact}/{sha256}`, also the member name
in an export archive), so an imported project's entries stay true under any id.
"""

from __future__ import annotations

import re
from typing import Any

from pycrdt import Doc, Map

PROJECTS = "projects/"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def relative_key(artifact_id: str, sha256: str) -> str:
    return f"artifacts/{artifact_id}/{sha256}"


def object_key(project_id: str, artifact_id: str, sha256: str) -> str:
    return f"{PROJECTS}{project_id}/{relative_key(artifact_id, sha256)}"


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def stored_sha256(entry: Any) -> str | None:
    """The hash of an entry's object (None: not an uploaded artifact)."""
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    return sha if is_sha256(sha) else None


def indexed(doc: Doc) -> dict[str, str]:
    """artifact id -> sha256, for the entries that name a stored object."""
    root = doc.get("artifacts", type=Map).to_py() or {}
    return {aid: sha for aid, entry in root.items() if (sha := stored_sha256(entry))}
