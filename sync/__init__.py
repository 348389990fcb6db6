"""Rooms, the y-websocket protocol, validation and repair, fan-out, and the agent client."""
