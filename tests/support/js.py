"""Stock JS Yjs clients (yjs + y-websocket + ws) in a node process, driven by command."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).resolve().parents[1] / "js" / "driver.mjs"
# A reply is one JSON line and may carry a whole document (asyncio's default: 64 KiB).
REPLY_LINE_BYTES = 64 * 1024 * 1024


class JsError(Exception):
    pass


class JsClients:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> JsClients:
        if not (DRIVER.parent / "node_modules" / "yjs").exists():
            raise RuntimeError("tests/js/node_modules is missing: run `make test`")
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=REPLY_LINE_BYTES,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            reply = json.loads(line)
            future = self._waiting.pop(reply["id"], None)
            if future is None or future.done():
                continue
            if reply["ok"]:
                future.set_result(reply["result"])
            else:
                future.set_exception(JsError(reply["error"]))

    async def call(self, cmd: str, timeout: float = 20.0, **args: Any) -> Any:
        assert self._proc.stdin is not None
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._proc.stdin.write((json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n").encode())
        await self._proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def connect(self, name: str, server_ws: str, project_id: str, **params: str) -> Any:
        return await self.call(
            "connect", name=name, url=f"{server_ws}/sync", room=project_id, params=params
        )

    async def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 5)
        except TimeoutError:
            self._proc.kill()
        self._reader.cancel()
