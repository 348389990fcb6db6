"""JSON views of a project document, derived from the shape in `blackboard.schemas.document`."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from pycrdt import Array, Doc, Map

from blackboard.schemas.document import ROOTS


def doc_to_json(doc: Doc) -> dict[str, Any]:
    """Every root of the shape as plain JSON (numbers come back as floats, JS rules)."""
    return {root.name: doc.get(root.name, type=Map).to_py() or {} for root in ROOTS}


def finite_json(value: Any) -> Any:
    """`value` as strict JSON, whatever a CRDT can hold: NaN and ±Infinity become null,
    binary content base64 text, anything else (Text, XML) its text. The repairs remove
    non-finite numbers as they arrive; this keeps a document stored before then, or a
    value on its way to repair, servable."""
    if isinstance(value, Map | Array):
        value = value.to_py()
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def json_bytes(value: Any) -> bytes:
    """`value` as strict JSON in UTF-8 (what every JSON view sends): one strict pass,
    and only if that fails (NaN/Infinity or binary content somewhere, or a lone
    surrogate, say from a presence state) `finite_json` first, ASCII-escaped."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")
    except (ValueError, TypeError):  # UnicodeEncodeError is a ValueError
        return json.dumps(finite_json(value), allow_nan=False, separators=(",", ":")).encode()


def holds_non_finite(value: Any) -> bool:
    """Whether plain JSON `value` (as `to_py` reads it) holds NaN or ±Infinity anywhere."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
