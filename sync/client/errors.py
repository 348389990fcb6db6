"""What the agent client raises."""

from __future__ import annotations

from typing import Any


class ConnectionClosed(Exception):
    """A socket was closed (by the server, or lost: 1006)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}")
        self.code = code
        self.reason = reason


class ConnectionRefused(ConnectionClosed):
    """A close the client does not retry: 4403 (forbidden), 4404 (unknown project),
    1009 (a message over the server's limit: the client's limit is set too high)."""


class UpdateTooLarge(Exception):
    """One local transaction is bigger than one message may be: it cannot be sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"a local transaction of {size} bytes is over the server's message limit of"
            f" {limit} bytes (BLACKBOARD_MAX_MESSAGE_BYTES / max_message_bytes): split the"
            " edit into several transactions, or raise both limits"
        )
        self.size = size
        self.limit = limit


class CallRefused(Exception):
    """The server decided a budget or lease call against it (a 4xx reply)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.error = str(body.get("error", "error"))
        super().__init__(f"{status} {self.error}: {body.get('detail', '')}")


class CallExpired(Exception):
    """A queued call is older than the server keeps idempotency keys: replaying it now
    could take effect twice, so it is dropped and reported instead."""


class LeaseLost(Exception):
    """The task's lease expired or was taken over while held."""


class ClientStopped(Exception):
    """The client was stopped while a call waited; the call stays in the replica."""
