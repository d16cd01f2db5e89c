from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from tiffin.config import BackendConfig


class RedisOnlineStoreConfig(BackendConfig):
    """``online_store: {type: redis, connection_string: "localhost:6379,db=0,password=..."}``
    (Feast's format), or a ``redis://`` URL."""

    type: Literal["redis"] = "redis"
    connection_string: SecretStr = SecretStr("localhost:6379")
    key_ttl_seconds: float | None = None  # keys expire this long after their last write
    key_ttl_from_view: bool = False  # or: expire each key after its view's ttl
    max_connections: int = 32
    socket_timeout_seconds: float = 2.0  # fail fast when Redis is down

    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"redis_type", "sentinel_master", "full_scan_for_deletion", "skip_dedup", "client"})

    def connection_kwargs(self) -> dict[str, Any]:
        raw = self.connection_string.get_secret_value()
        timeouts = {"socket_timeout": self.socket_timeout_seconds,
                    "socket_connect_timeout": self.socket_timeout_seconds}
        if "://" in raw:
            import redis
            kwargs = redis.connection.parse_url(raw)
            return {**kwargs, **timeouts}
        host_port, *options = raw.split(",")
        host, _, port = host_port.partition(":")
        kwargs: dict[str, Any] = {"host": host or "localhost", "port": int(port or 6379)}
        for opt in options:
            key, _, value = opt.partition("=")
            key = key.strip()
            if key == "db":
                kwargs["db"] = int(value)
            elif key in ("password", "username"):
                kwargs[key] = value
            elif key == "ssl" and value.lower() in ("true", "1"):
                import redis  # redis-py takes TLS as a connection class, not a flag
                kwargs["connection_class"] = redis.SSLConnection
        return {**kwargs, **timeouts}

    def store_class(self) -> type:
        from tiffin.online.redis.store import RedisOnlineStore
        return RedisOnlineStore
