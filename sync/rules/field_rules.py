"""Does a value fit the kind of its field, and if not, what it becomes.

A wrong value is converted when nothing is lost (`"12"` for a number becomes `12`, a
plain JSON object where a Map belongs becomes a Map with the same fields), otherwise
removed. `null` fits every field: it means unset.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Map, Text

from blackboard.schemas.document import Kind

_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Fix:
    """What a wrong value becomes: `value` (plain JSON, written as shared types), or
    removed when `value` is None."""

    value: Any


def conform(kind: Kind, value: Any) -> Fix | None:
    """None if `value` fits `kind`; else the fix."""
    if value is None or kind is Kind.ANY:
        return None
    if kind is Kind.TEXT:
        if isinstance(value, str):
            return None
        if isinstance(value, Text):
            return Fix(str(value))
        if _is_number(value):
            return Fix(js_number_text(float(value)))
    elif kind is Kind.NUMBER:
        if _is_number(value):
            return None
        if isinstance(value, str) and _JSON_NUMBER.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return Fix(number)
    elif kind is Kind.ARRAY:
        if isinstance(value, Array):
            return None
        if isinstance(value, list):
            return Fix(value)
    elif kind is Kind.MAP:
        if isinstance(value, Map):
            return None
        if isinstance(value, dict):
            return Fix(value)
    return Fix(None)


def json_value(value: Any) -> Any:
    """`value` as plain JSON, for corrections (shared types as their content)."""
    if isinstance(value, Map | Array):
        return json_value(value.to_py())
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # Text and XML types read as their text


def js_number_text(number: float) -> str:
    """A number as JavaScript's String() writes it (`12`, not `12.0`)."""
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(number))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
