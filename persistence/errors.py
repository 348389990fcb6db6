"""Errors a store raises; the web layer maps them to statuses and close codes."""

from __future__ import annotations

from typing import Any


def error_body(code: str, detail: str, **context: Any) -> dict[str, Any]:
    """The JSON of every refusal, from the web layer or a stored reply (a ledger or lease
    op's): `{"error": code, "detail": text}`, with what the caller needs to retry."""
    return {"error": code, "detail": detail, **context}


class StoreError(Exception):
    """The backend failed (unreachable, or a statement failed)."""


class ProjectNotFound(StoreError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"project {project_id!r} does not exist")
        self.project_id = project_id


class ProjectExists(StoreError):
    def __init__(self, project_id: str) -> None:
        super().__init__(f"project {project_id!r} already exists")
        self.project_id = project_id


class SchemaBehind(StoreError):
    """The database lacks migrations this code needs."""


class LogFull(StoreError):
    """Too many updates wait for the database; new writes are refused until it recovers."""


class HistoryPruned(StoreError):
    """The state asked for is older than what retention kept."""

    def __init__(self, project_id: str, seq: int | None = None) -> None:
        at = f" at seq {seq}" if seq is not None else ""
        super().__init__(f"the history of {project_id!r}{at} is no longer retained")
        self.project_id = project_id
