"""The crashers kept in tests/regressions/*.bin, and the document they apply to."""

from __future__ import annotations

from pathlib import Path

from pycrdt import Array, Doc, Map

FOLDER = Path(__file__).resolve().parents[1] / "regressions"
REGRESSIONS: dict[str, bytes] = {p.stem: p.read_bytes() for p in sorted(FOLDER.glob("*.bin"))}


def base_doc() -> Doc:
    """The content each kept crasher was found on (they refer to its items)."""
    doc = Doc(client_id=3)
    with doc.transaction():
        doc.get("shots", type=Map)["S1"] = Map(
            {"title": "x", "status": "draft", "n": 1, "arr": Array([1, "a", {"k": None}])}
        )
    return doc
