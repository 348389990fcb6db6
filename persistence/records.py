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
    status_epochs: bytes = b""  # opaque to persistence, see `StoredDocument.status_epochs`


@dataclass(frozen=True)
class Snapshot:
    upto_seq: int
    state: bytes
    state_vector: bytes
    created_at: datetime
    status_epochs: bytes = b""  # the record of every row the snapshot covers


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

    @property
    def status_epochs(self) -> bytes:
        """The record of the whole loaded state: the snapshot's, then each tail row's.

        The sync layer writes self-delimiting entries, so the concatenation is itself a
        valid record; persistence never parses it.
        """
        head = self.snapshot.status_epochs if self.snapshot else b""
        return head + b"".join(entry.status_epochs for entry in self.tail)


@dataclass(slots=True)  # not frozen: one per update, and frozen fields cost in __init__
class PendingAppend:
    project_id: str
    update: bytes
    actor: str
    # The attempt each task-status write of `update` counted for (the document does not
    # keep it); stored atomically with the row, b"" when there is none.
    status_epochs: bytes = b""


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    actor: str
    created_at: datetime
    size: int
