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

    # Members are singletons, equal only to themselves: hashed by identity in C, not by
    # Enum's Python-level hash of the name (metrics key counts by source on every update).
    __hash__ = object.__hash__


# Not frozen: every client update builds one, and a frozen dataclass's __init__ costs
# 2.5 times as much (one object.__setattr__ per field). Nothing changes one once built.
@dataclass(eq=False, slots=True)
class Origin:
    source: Source
    actor: str
    connection: Connection | None = None
