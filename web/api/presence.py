"""Who is connected to a project now, on every instance (DESIGN.md section 5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from blackboard.sync.room.presence import local_presence
from blackboard.web.api.requests import project_record, services
from blackboard.web.json_response import JSONResponse


async def read_presence(request: Request) -> JSONResponse:
    """`{project_id, connections, instances: [{instance_id, connections, clients:
    [{client_id, state}]}], complete}`; `complete` is false when Redis could not be
    asked, and the answer then covers this instance only."""
    project_id = (await project_record(request)).project_id
    svc = services(request)
    room = svc.rooms.rooms.get(project_id)  # presence never loads a project
    if svc.cross_instance is not None:
        found = await svc.cross_instance.presence_of(project_id, room)
    else:
        here = local_presence(room, "local")
        found = {"instances": [here] if here["connections"] else [], "complete": True}
    total = sum(entry.get("connections", 0) for entry in found["instances"])
    return JSONResponse({"project_id": project_id, "connections": total, **found})


routes = [Route("/api/projects/{project_id}/presence", read_presence, methods=["GET"])]
