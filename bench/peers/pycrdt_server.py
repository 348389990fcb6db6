"""pycrdt-websocket's own server (the Python baseline) on 127.0.0.1:PORT, for bench/.

Its `WebsocketServer` behind its `ASGIServer`, run by uvicorn exactly like Blackboard
(uvloop, no per-message deflate); documents live in memory, one room per URL path.

    python bench/peers/pycrdt_server.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
import uvloop
from pycrdt.websocket import ASGIServer, WebsocketServer


async def serve(port: int) -> None:
    async with WebsocketServer(auto_clean_rooms=True) as websocket_server:
        config = uvicorn.Config(
            ASGIServer(websocket_server),
            host="127.0.0.1",
            port=port,
            ws_per_message_deflate=False,
            ws_max_size=64 * 1024 * 1024,
            log_level="warning",
        )
        print(f"pycrdt-websocket listening on 127.0.0.1:{port}", flush=True)
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
