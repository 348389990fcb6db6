"""The Python client for agents: `BlackboardClient` (offline-first, DESIGN.md section 10)
and `Session` (one socket, no replica, no reconnect)."""

from blackboard.sync.client.client import BlackboardClient
from blackboard.sync.client.errors import (
    CallExpired,
    CallRefused,
    ClientStopped,
    ConnectionClosed,
    ConnectionRefused,
    LeaseLost,
    UpdateTooLarge,
)
from blackboard.sync.client.session import Session
from blackboard.sync.client.task_lease import TaskLease

__all__ = [
    "BlackboardClient",
    "CallExpired",
    "CallRefused",
    "ClientStopped",
    "ConnectionClosed",
    "ConnectionRefused",
    "LeaseLost",
    "Session",
    "TaskLease",
    "UpdateTooLarge",
]
