"""Running the `blackboard` command line in a subprocess."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.support.server import ROOT

CLI_TIMEOUT_S = 60.0


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `blackboard ARGS...` with `env` added."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blackboard.web.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
