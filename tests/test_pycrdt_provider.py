"""pycrdt's own `Provider` syncs with the server with no adapter."""

from __future__ import annotations

from httpx_ws import aconnect_ws
from pycrdt import Doc, Map, Provider
from pycrdt.websocket.websocket import HttpxWebsocket

from tests.support.api import create_project, eventually, project_json
from tests.support.server import ServerProcess


async def test_pycrdt_provider_round_trip(server: ServerProcess) -> None:
    await create_project(server, "prov", spec={"fps": 24})
    doc = Doc()
    async with (
        aconnect_ws(f"{server.http}/sync/prov") as ws,
        Provider(doc, HttpxWebsocket(ws, "prov")),
    ):
        spec = doc.get("spec", type=Map)

        def synced() -> None:
            assert spec.get("title") == "prov"

        await eventually(synced)
        assert spec["fps"] == 24
        doc.get("dna_bank", type=Map)["hero"] = Map({"name": "Mara"})

        async def stored() -> None:
            body = await project_json(server, "prov")
            assert body["doc"]["dna_bank"] == {"hero": {"name": "Mara"}}

        await eventually(stored)
