"""A private Postgres cluster (initdb into a temporary folder, on a free port) that a
test may stop, crash and restart without touching the shared one other tests use.

Postgres refuses to run as root, so as root every command runs as the `postgres` user.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.support.server import free_port

COMMAND_TIMEOUT_S = 60.0


def _bin_dir() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise RuntimeError("no Postgres server binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


class PrivatePostgres:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bb-private-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if self._as_postgres else command

    def _pg_ctl(self, *args: str) -> list[str]:
        return self._command("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)

    def _start_args(self) -> list[str]:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
            " -c max_connections=60 -c shared_buffers=64MB -c fsync=on"
            " -c synchronous_commit=on"
        )
        return self._pg_ctl("-l", str(self.log), "-o", options, "start")

    def init_and_start(self) -> PrivatePostgres:
        """initdb and start, blocking (for fixture setup)."""
        subprocess.run(
            self._command(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
            ),
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        subprocess.run(
            self._start_args(), check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S
        )
        return self

    async def _run(self, command: list[str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"{command} failed ({proc.returncode}): {out.decode()}")

    async def start(self) -> None:
        await self._run(self._start_args())

    async def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects clients and shuts down cleanly; `immediate` is a crash
        (no shutdown checkpoint: recovery replays the WAL on the next start)."""
        await self._run(self._pg_ctl("-m", mode, "stop"))

    def server_pids(self) -> list[int]:
        """The postmaster and its children now (backends, WAL writer, checkpointer...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)

    def destroy(self) -> None:
        subprocess.run(
            self._pg_ctl("-m", "immediate", "stop"), capture_output=True, timeout=COMMAND_TIMEOUT_S
        )
        shutil.rmtree(self.root, ignore_errors=True)
