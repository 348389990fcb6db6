"""A private redis-server on a free loopback port, which a test may stop, kill and restart
(never the shared one on 6379: other tests use it)."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path

import redis
import redis.asyncio

from tests.support.server import free_port

START_TIMEOUT_S = 10.0
POLL_S = 0.05


class PrivateRedis:
    def __init__(self, *config: str) -> None:
        self.config = list(config)  # extra redis-server arguments, e.g. "--maxmemory", "1mb"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bb-private-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> PrivateRedis:
        """Spawn redis-server and wait until it answers PING."""
        self.proc = await asyncio.to_thread(self._spawn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            client = self.client(socket_timeout=1)
            try:
                await client.ping()
                return self
            except redis.ConnectionError:
                await asyncio.sleep(POLL_S)
            finally:
                await client.aclose()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with (self.dir / "redis.log").open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [
                    *("redis-server", "--bind", "127.0.0.1", "--port", str(self.port)),
                    *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
                    *self.config,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def kill(self) -> None:
        """SIGKILL: every connection drops and every message in flight is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)

    async def restart(self) -> PrivateRedis:
        await self.kill()
        return await self.start()

    def client(self, socket_timeout: float = 5) -> redis.asyncio.Redis:
        return redis.asyncio.Redis(port=self.port, socket_timeout=socket_timeout)
