"""docker-compose.yml, the Dockerfile and the nginx config cannot run here (no Docker
engine): these checks keep them true to the code by reading them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from blackboard.web.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"\bBLACKBOARD_[A-Z0-9_]+")


class _Recorder(dict[str, str]):
    """An empty environment that remembers which variables were looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())


def _read_by_the_server() -> set[str]:
    env = _Recorder()
    Settings.from_env(env)
    return env.asked


def test_deploy_files_set_only_variables_the_server_reads() -> None:
    read = _read_by_the_server()
    assert "BLACKBOARD_REDIS_URL" in read  # the recorder sees what from_env asks for
    for name in ("docker-compose.yml", "Dockerfile"):
        used = set(VARIABLE.findall((ROOT / name).read_text()))
        assert used, name
        assert used <= read, f"{name} sets variables the server never reads: {used - read}"


def test_two_instances_on_shared_backends_behind_the_balancer() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    for instance in ("blackboard-1", "blackboard-2"):
        assert f"\n  {instance}:\n" in compose
        assert f"BLACKBOARD_INSTANCE_ID: {instance}" in compose
        assert f"server {instance}:8000" in nginx
    for service in ("postgres", "redis", "minio", "lb"):
        assert f"\n  {service}:\n" in compose
    assert "BLACKBOARD_REDIS_URL: redis://redis:6379/0" in compose
    assert "@postgres:5432/" in compose
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf" in compose
    # WebSocket upgrade through the balancer, and sockets that may stay quiet a while.
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
    assert "proxy_set_header Connection $connection_upgrade" in nginx
    assert re.search(r"proxy_read_timeout \d{3,}s", nginx)
    assert (
        "blackboard migrate && exec blackboard serve --host 0.0.0.0"
        in (ROOT / "Dockerfile").read_text()
    )


def test_instances_store_objects_in_minio_and_uploads_stream_through_nginx() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "BLACKBOARD_S3_ENDPOINT: minio:9000" in compose
    assert "MINIO_ROOT_USER: blackboard\n" in compose
    assert "BLACKBOARD_S3_ACCESS_KEY: blackboard\n" in compose
    assert "MINIO_ROOT_PASSWORD: blackboard-minio" in compose
    assert "BLACKBOARD_S3_SECRET_KEY: blackboard-minio" in compose
    artifacts = nginx[nginx.index("/artifacts/ {") :]
    assert "client_max_body_size 0;" in artifacts.split("}")[0]
    assert "proxy_request_buffering off;" in artifacts.split("}")[0]
