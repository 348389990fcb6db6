"""The HTTP face: the Starlette app and its composition, the socket endpoint where an
update enters, the REST API, auth and tokens, the CLI and the dashboard."""
