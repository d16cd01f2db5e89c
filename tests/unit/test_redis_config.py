"""The Redis online store's settings: one server, a cluster's nodes, or sentinels."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("redis")

from tiffin import RepoConfig  # noqa: E402
from tiffin.errors import ConfigError  # noqa: E402


def online(**section):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Feast's keys are read now, not warned about
        return RepoConfig(project="p", registry="r.json",
                          online_store={"type": "redis", **section}).online_store


def test_one_server_keeps_feasts_connection_string():
    cfg = online(connection_string="cache:6380,db=3,password=pw,username=u")
    assert cfg.redis_type == "redis"
    assert cfg.connection_kwargs() == {
        "host": "cache", "port": 6380, "db": 3, "password": "pw", "username": "u",
        "socket_timeout": 2.0, "socket_connect_timeout": 2.0}


def test_cluster_reads_every_address_as_a_startup_node():
    import redis
    cfg = online(redis_type="redis_cluster",
                 connection_string="n1:7000, n2:7001,[::1]:7002,ssl=true,password=pw")
    assert cfg.addresses() == [("n1", 7000), ("n2", 7001), ("::1", 7002)]
    opts = cfg.options()
    assert opts["password"] == "pw" and opts["connection_class"] is redis.SSLConnection
    assert "host" not in opts and "port" not in opts


def test_sentinel_reads_the_addresses_as_sentinels_and_names_the_master():
    cfg = online(redis_type="redis_sentinel", sentinel_master="orders",
                 connection_string="s1:26379,s2:26379,s3:26379,password=pw")
    assert cfg.sentinel_master == "orders"
    assert [port for _, port in cfg.addresses()] == [26379] * 3
    # The sentinels get only the timeouts; the password is the data nodes'.
    assert cfg.timeouts() == {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    assert cfg.options()["password"] == "pw"


def test_a_url_still_names_one_server():
    cfg = online(connection_string="redis://:pw@cache:6390/2")
    assert cfg.addresses() == [("cache", 6390)]
    assert cfg.connection_kwargs()["db"] == 2


@pytest.mark.parametrize("section, message", [
    ({"connection_string": "a:1,b:2,password=sekrit"}, "names 2 servers"),
    ({"redis_type": "redis_cluster", "connection_string": "a:1,db=2"}, "only database 0"),
    ({"redis_type": "redis_cluster", "connection_string": "unix:///tmp/r.sock"},
     "not a unix socket"),
    ({"connection_string": "a:port,password=sekrit"}, "numeric port"),
    # A ':' typed for the '=': what follows it is the password, never to be shown.
    ({"connection_string": "cache:6379,password:sekrit"}, "numeric port"),
    ({"redis_type": "redis_sentinel", "sentinel_master": ""}, "needs sentinel_master"),
    # Without brackets, "::1" would read as host ":" and port 1.
    ({"connection_string": "::1,password=sekrit"}, "in brackets"),
    ({"redis_type": "redis_cluster", "connection_string": "fe80::1:7000"}, "in brackets"),
    ({"redis_type": "memcached"}, "redis_type"),
])
def test_bad_settings_are_config_errors_that_hide_the_password(section, message):
    with pytest.raises(ConfigError, match=message) as e:
        online(**section)
    assert "sekrit" not in str(e.value)
