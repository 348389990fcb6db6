"""Configuration, read once from the environment (every variable is in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from blackboard.persistence.objects.object_store import S3Config


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 1024 * 1024
    max_document_bytes: int = 64 * 1024 * 1024
    send_queue_bytes: int = 4 * 1024 * 1024
    messages_per_second: float = 500.0
    rate_window_s: float = 5.0
    max_pending_log_bytes: int = 64 * 1024 * 1024
    max_connections_per_actor: int = 100  # sockets per token actor (auth on only)
    ping_interval_s: float = 20.0  # then a peer must answer within ping_timeout_s
    ping_timeout_s: float = 20.0
    header_timeout_s: float = 5.0  # request headers complete within this; 0: no limit
    max_connections_per_address: int = 1000  # sockets per client IP; 0: no cap
    connection_rate_per_address: float = 20.0  # new connections/s per client IP; 0: none
    connection_burst_per_address: int = 200  # at once, before the rate applies
    max_awareness_ids_per_connection: int = 4  # a Yjs client has one
    max_awareness_state_bytes: int = 64 * 1024
    max_awareness_states_per_room: int = 10_000


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("blackboard-data")
    database_url: str | None = None
    database_pool_size: int = 10
    redis_url: str | None = None
    redis_prefix: str = "bb:"
    redis_timeout_s: float = 2.0  # every Redis call
    instance_id: str | None = None  # a name (default host-pid); a random suffix is added
    catchup_check_s: float = 2.0  # read missed log rows this often while Redis is up
    catchup_poll_s: float = 0.5  # and this often while Redis is down
    instance_ttl_s: float = 10.0  # a silent instance counts as dead after this long
    auth_secret: str | None = None
    allowed_origins: tuple[str, ...] = ()  # browser Origins allowed on sockets; empty: all
    log_format: str = "human"
    log_level: str = "info"
    room_idle_s: float = 30.0
    compact_after_rows: int = 1000
    compact_after_bytes: int = 4 * 1024 * 1024
    history_retention_s: float = 7 * 24 * 3600.0
    shutdown_timeout_s: float = 30.0
    idempotency_ttl_s: float = 7 * 24 * 3600.0  # how long a budget/lease key is replayed
    limits: Limits = field(default_factory=Limits)
    s3: S3Config | None = None  # with BLACKBOARD_S3_ENDPOINT; else a folder in the data dir
    max_artifact_bytes: int = 5 * 1024**3
    orphan_grace_s: float = 3600.0  # objects with no index entry are swept after this long

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            host=env.get("BLACKBOARD_HOST", d.host),
            port=_int(env, "BLACKBOARD_PORT", d.port),
            data_dir=Path(env.get("BLACKBOARD_DATA_DIR", str(d.data_dir))),
            database_url=env.get("BLACKBOARD_DATABASE_URL") or None,
            database_pool_size=_int(env, "BLACKBOARD_DATABASE_POOL_SIZE", d.database_pool_size),
            redis_url=env.get("BLACKBOARD_REDIS_URL") or None,
            redis_prefix=env.get("BLACKBOARD_REDIS_PREFIX", d.redis_prefix),
            redis_timeout_s=_float(env, "BLACKBOARD_REDIS_TIMEOUT_S", d.redis_timeout_s),
            instance_id=env.get("BLACKBOARD_INSTANCE_ID") or None,
            catchup_check_s=_float(env, "BLACKBOARD_CATCHUP_CHECK_S", d.catchup_check_s),
            catchup_poll_s=_float(env, "BLACKBOARD_CATCHUP_POLL_S", d.catchup_poll_s),
            instance_ttl_s=_float(env, "BLACKBOARD_INSTANCE_TTL_S", d.instance_ttl_s),
            auth_secret=env.get("BLACKBOARD_AUTH_SECRET") or None,
            allowed_origins=tuple(
                origin.strip().rstrip("/")
                for origin in env.get("BLACKBOARD_ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            log_format=env.get("BLACKBOARD_LOG_FORMAT", d.log_format),
            log_level=env.get("BLACKBOARD_LOG_LEVEL", d.log_level),
            room_idle_s=_float(env, "BLACKBOARD_ROOM_IDLE_S", d.room_idle_s),
            compact_after_rows=_int(env, "BLACKBOARD_COMPACT_AFTER_ROWS", d.compact_after_rows),
            compact_after_bytes=_int(env, "BLACKBOARD_COMPACT_AFTER_BYTES", d.compact_after_bytes),
            history_retention_s=_float(
                env, "BLACKBOARD_HISTORY_RETENTION_S", d.history_retention_s
            ),
            shutdown_timeout_s=_float(env, "BLACKBOARD_SHUTDOWN_TIMEOUT_S", d.shutdown_timeout_s),
            idempotency_ttl_s=_float(env, "BLACKBOARD_IDEMPOTENCY_TTL_S", d.idempotency_ttl_s),
            limits=Limits(
                max_message_bytes=_int(
                    env, "BLACKBOARD_MAX_MESSAGE_BYTES", d.limits.max_message_bytes
                ),
                max_document_bytes=_int(
                    env, "BLACKBOARD_MAX_DOCUMENT_BYTES", d.limits.max_document_bytes
                ),
                send_queue_bytes=_int(
                    env, "BLACKBOARD_SEND_QUEUE_BYTES", d.limits.send_queue_bytes
                ),
                messages_per_second=_float(
                    env, "BLACKBOARD_RATE_LIMIT", d.limits.messages_per_second
                ),
                max_pending_log_bytes=_int(
                    env, "BLACKBOARD_MAX_PENDING_LOG_BYTES", d.limits.max_pending_log_bytes
                ),
                rate_window_s=_float(env, "BLACKBOARD_RATE_WINDOW_S", d.limits.rate_window_s),
                max_connections_per_actor=_int(
                    env,
                    "BLACKBOARD_MAX_CONNECTIONS_PER_ACTOR",
                    d.limits.max_connections_per_actor,
                ),
                ping_interval_s=_float(env, "BLACKBOARD_PING_INTERVAL_S", d.limits.ping_interval_s),
                ping_timeout_s=_float(env, "BLACKBOARD_PING_TIMEOUT_S", d.limits.ping_timeout_s),
                header_timeout_s=_float(
                    env, "BLACKBOARD_HEADER_TIMEOUT_S", d.limits.header_timeout_s
                ),
                max_connections_per_address=_int(
                    env,
                    "BLACKBOARD_MAX_CONNECTIONS_PER_ADDRESS",
                    d.limits.max_connections_per_address,
                ),
                connection_rate_per_address=_float(
                    env,
                    "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS",
                    d.limits.connection_rate_per_address,
                ),
                connection_burst_per_address=_int(
                    env,
                    "BLACKBOARD_CONNECTION_BURST_PER_ADDRESS",
                    d.limits.connection_burst_per_address,
                ),
                max_awareness_ids_per_connection=_int(
                    env,
                    "BLACKBOARD_MAX_AWARENESS_IDS_PER_CONNECTION",
                    d.limits.max_awareness_ids_per_connection,
                ),
                max_awareness_state_bytes=_int(
                    env, "BLACKBOARD_MAX_AWARENESS_STATE_BYTES", d.limits.max_awareness_state_bytes
                ),
                max_awareness_states_per_room=_int(
                    env,
                    "BLACKBOARD_MAX_AWARENESS_STATES_PER_ROOM",
                    d.limits.max_awareness_states_per_room,
                ),
            ),
            s3=s3_from_env(env),
            max_artifact_bytes=_int(env, "BLACKBOARD_MAX_ARTIFACT_BYTES", d.max_artifact_bytes),
            orphan_grace_s=_float(env, "BLACKBOARD_ORPHAN_GRACE_S", d.orphan_grace_s),
        )
        limits = settings.limits
        if limits.connection_rate_per_address > 0 and limits.connection_burst_per_address < 1:
            raise SystemExit(
                "BLACKBOARD_CONNECTION_BURST_PER_ADDRESS must be at least 1 while "
                "BLACKBOARD_CONNECTION_RATE_PER_ADDRESS is on"
            )
        return settings

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def s3_from_env(env: Mapping[str, str], bucket: str | None = None) -> S3Config | None:
    """The S3 settings when BLACKBOARD_S3_ENDPOINT is set (`bucket` overrides the
    configured one, e.g. for `--out s3://bucket/key`)."""
    config = S3Config(
        endpoint=env.get("BLACKBOARD_S3_ENDPOINT") or "",
        access_key=env.get("BLACKBOARD_S3_ACCESS_KEY") or "",
        secret_key=env.get("BLACKBOARD_S3_SECRET_KEY") or "",
        bucket=bucket or env.get("BLACKBOARD_S3_BUCKET") or "blackboard",
        secure=(env.get("BLACKBOARD_S3_SECURE") or "").lower() in ("1", "true", "yes", "on"),
        region=env.get("BLACKBOARD_S3_REGION") or None,
    )
    return config if config.endpoint else None
