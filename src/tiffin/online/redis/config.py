from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import SecretStr, model_validator

from tiffin.config import BackendConfig


class RedisOnlineStoreConfig(BackendConfig):
    """``online_store: {type: redis, connection_string: "localhost:6379,db=0,password=..."}``
    (Feast's format), or a ``redis://`` URL.

    ``redis_type: redis_cluster`` reads the addresses in ``connection_string``
    ("host1:port1,host2:port2,password=...") as the cluster's startup nodes;
    ``redis_type: redis_sentinel`` reads them as the sentinels to ask for the master
    named ``sentinel_master``. The options (password, username, ssl) are the data
    nodes' in both cases; sentinels get only the timeouts, as redis-py's Sentinel does.
    """

    type: Literal["redis"] = "redis"
    redis_type: Literal["redis", "redis_cluster", "redis_sentinel"] = "redis"
    sentinel_master: str = "mymaster"
    connection_string: SecretStr = SecretStr("localhost:6379")
    key_ttl_seconds: float | None = None  # keys expire this long after their last write
    key_ttl_from_view: bool = False  # or: expire each key after its view's ttl
    max_connections: int = 32
    socket_timeout_seconds: float = 2.0  # fail fast when Redis is down

    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"full_scan_for_deletion", "skip_dedup", "client"})

    @model_validator(mode="after")
    def _check(self) -> RedisOnlineStoreConfig:
        addresses, options = self._parse()
        if self.redis_type != "redis" and not addresses:
            raise ValueError(f"{self.redis_type} needs host:port addresses in "
                             "connection_string, not a unix socket")
        if self.redis_type == "redis" and len(addresses) > 1:
            raise ValueError(
                f"connection_string names {len(addresses)} servers; one Redis server takes "
                "one (set redis_type: redis_cluster or redis_sentinel for several)")
        if self.redis_type == "redis_cluster" and options.get("db"):
            raise ValueError("a Redis Cluster has only database 0; drop db= from "
                             "connection_string")
        if self.redis_type == "redis_sentinel" and not self.sentinel_master:
            raise ValueError("redis_sentinel needs sentinel_master (the monitored name)")
        return self

    def _parse(self) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        """(the addresses, the connection options other than host and port)."""
        raw = self.connection_string.get_secret_value()
        if "://" in raw:
            import redis
            kwargs = redis.connection.parse_url(raw)
            if "path" in kwargs:  # unix://: a socket, no address
                return [], kwargs
            host, port = kwargs.pop("host", "localhost"), int(kwargs.pop("port", 6379))
            return [(host, port)], kwargs
        addresses: list[tuple[str, int]] = []
        kwargs: dict[str, Any] = {}
        for item in raw.split(","):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                if item.count(":") > 1 and not item.startswith("["):
                    # "::1" would split into host ":" and port 1: IPv6 needs brackets.
                    raise ValueError("connection_string: an IPv6 address is written in "
                                     "brackets with its port, e.g. [::1]:6379")
                host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
                try:
                    addresses.append((host.strip("[]") or "localhost", int(port or 6379)))
                except ValueError:
                    # Never echo the string: it may hold a password.
                    # Nor what follows its ':' ("password:..." typed for "password=...").
                    raise ValueError("connection_string: a server address must be host:port, "
                                     "with a numeric port (options are key=value)") from None
                continue
            key, _, value = item.partition("=")
            key = key.strip()
            if key == "db":
                kwargs["db"] = int(value)
            elif key in ("password", "username"):
                kwargs[key] = value
            elif key == "ssl" and value.lower() in ("true", "1"):
                kwargs["ssl"] = True
        return addresses or [("localhost", 6379)], kwargs

    def addresses(self) -> list[tuple[str, int]]:
        """The servers named: the one server, the cluster's startup nodes, or the sentinels."""
        return self._parse()[0]

    def timeouts(self) -> dict[str, float]:
        return {"socket_timeout": self.socket_timeout_seconds,
                "socket_connect_timeout": self.socket_timeout_seconds}

    def options(self) -> dict[str, Any]:
        """redis-py keyword arguments for a data node, without host and port."""
        kwargs = self._parse()[1]
        if kwargs.pop("ssl", False) and "connection_class" not in kwargs:
            import redis  # redis-py takes TLS as a connection class, not a flag
            kwargs["connection_class"] = redis.SSLConnection
        return {**kwargs, **self.timeouts()}

    def connection_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for the server named (a single server)."""
        addresses = self.addresses()
        if not addresses:
            return self.options()
        host, port = addresses[0]
        return {"host": host, "port": port, **self.options()}

    def store_class(self) -> type:
        from tiffin.online.redis.store import RedisOnlineStore
        return RedisOnlineStore
