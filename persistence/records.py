"""Plain records passed between the stores and the rest of the server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ProjectRecord:
    project_id: str
    title: str
    seq: int  # last committed seq of the update log
    created_at: datetime


@dataclass(frozen=True)
class LogEntry:
    seq: int
    update: bytes
    actor: str
    created_at: datetime


@dataclass(frozen=True)
class Snapshot:
    upto_seq: int
    state: bytes
    state_vector: bytes
    created_at: datetime


@dataclass(frozen=True)
class StoredDocument:
    """What a load reads: the newest snapshot (if any) and the log after it."""

    snapshot: Snapshot | None
    tail: list[LogEntry]

    @property
    def seq(self) -> int:
        if self.tail:
            return self.tail[-1].seq
        return self.snapshot.upto_seq if self.snapshot else 0


@dataclass(frozen=True)
class PendingAppend:
    project_id: str
    update: bytes
    actor: str


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    actor: str
    created_at: datetime
    size: int
