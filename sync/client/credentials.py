"""The token a client presents, and where a fresh one comes from when it expires."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

TokenProvider = Callable[[], str | Awaitable[str]]


class Credentials:
    def __init__(self, token: str | None, provider: TokenProvider | None) -> None:
        self.token = token
        self.provider = provider
        self.refreshes = 0  # how many times the provider was asked

    async def current(self) -> str | None:
        if self.token is None and self.provider is not None:
            await self.refresh()
        return self.token

    async def refresh(self) -> str | None:
        """Ask the provider (a plain or an async callable) for a new token."""
        if self.provider is None:
            return self.token
        value = self.provider()
        if inspect.isawaitable(value):
            value = await value
        self.token = value
        self.refreshes += 1
        return self.token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}
