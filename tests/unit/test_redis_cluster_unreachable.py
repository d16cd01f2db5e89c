"""A Redis Cluster none of whose nodes answers is a StoreUnavailableError (a 503), as a
single server is: redis-py's cluster client raises RedisClusterException, which is not a
RedisError."""

from __future__ import annotations

import socket

import pytest

from tiffin import RepoConfig
from tiffin.errors import StoreUnavailableError

pytest.importorskip("redis")


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_store_unavailable(tmp_path):
    from tiffin.online.redis.store import RedisOnlineStore

    config = RepoConfig(project="cluster_down", registry=str(tmp_path / "registry.json"),
                        online_store={"type": "redis", "redis_type": "redis_cluster",
                                      "connection_string": f"127.0.0.1:{_closed_port()}",
                                      "socket_timeout_seconds": 0.5})
    with pytest.raises(StoreUnavailableError, match="Redis"):
        RedisOnlineStore(config.online_store, config)
