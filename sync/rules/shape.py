"""Turning plain JSON into the shared types the document shape asks for."""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Map


def to_shared(value: Any) -> Any:
    """dicts become nested Maps and lists Arrays, so concurrent field edits both win."""
    if isinstance(value, dict):
        return Map({key: to_shared(item) for key, item in value.items()})
    if isinstance(value, list):
        return Array([to_shared(item) for item in value])
    return value
