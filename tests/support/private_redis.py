"""A private redis-server on a free loopback port, which a test may stop, kill and restart
(never the shared one on 6379: other tests use it)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.server import free_port

START_TIMEOUT_S = 10.0


class PrivateRedis:
    def __init__(self, *config: str) -> None:
        self.config = list(config)  # extra redis-server arguments, e.g. "--maxmemory", "1mb"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bb-private-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--bind", "127.0.0.1", "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--dir", str(self.dir)),
                *self.config,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: every connection drops and every message in flight is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> PrivateRedis:
        self.kill()
        return self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)
