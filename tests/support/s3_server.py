"""A real S3-compatible server in its own process on loopback: moto's standalone server
(MinIO cannot be installed here; compose runs MinIO itself)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx

from blackboard.persistence.objects.object_store import S3Config
from tests.support.server import ROOT, free_port

MOTO = ROOT / ".venv" / "bin" / "moto_server"


class S3ServerProcess:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"moto-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, bucket: str | None = None) -> S3Config:
        """Settings for a bucket of its own (moto takes any credentials)."""
        return S3Config(
            endpoint=self.endpoint,
            access_key="test-access",
            secret_key="test-secret",
            bucket=bucket or f"bb-{uuid.uuid4().hex[:12]}",
            region="us-east-1",
        )

    def env(self, config: S3Config) -> dict[str, str]:
        return {
            "BLACKBOARD_S3_ENDPOINT": config.endpoint,
            "BLACKBOARD_S3_ACCESS_KEY": config.access_key,
            "BLACKBOARD_S3_SECRET_KEY": config.secret_key,
            "BLACKBOARD_S3_BUCKET": config.bucket,
            "BLACKBOARD_S3_REGION": config.region or "",
        }

    def start(self, timeout: float = 30.0) -> S3ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}")
            try:
                httpx.get(f"http://{self.endpoint}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not start in {timeout}s")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
