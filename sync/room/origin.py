"""Where a change to a live document came from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from blackboard.schemas.document import SERVER_ACTOR as SERVER_ACTOR  # re-exported: sync's name
from blackboard.sync.room.connection import Connection


class Source(Enum):
    CLIENT = "client"  # a socket or an HTTP POST
    SERVER = "server"  # repairs, budget and lease mirrors
    PEER = "peer"  # another server instance (already stored by it)


@dataclass(frozen=True, eq=False)
class Origin:
    source: Source
    actor: str
    connection: Connection | None = None
