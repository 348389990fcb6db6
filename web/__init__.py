"""The Starlette app: socket endpoint, REST API, CLI and dashboard."""
