"""JSON views of a project document, derived from the shape in `schemas.document`."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from schemas.document import ROOTS


def doc_to_json(doc: Doc) -> dict[str, Any]:
    """Every root of the shape as plain JSON (numbers come back as floats, JS rules)."""
    return {root.name: doc.get(root.name, type=Map).to_py() or {} for root in ROOTS}
