"""Throwaway Redis Cluster and Sentinel groups on loopback ports, for the tests.

Each group is a set of ``redis-server`` processes with their data under a temporary
directory, started once per test session (see the fixtures in conftest.py) and
stopped at its end. Ports come from 7000-7099, kept free of other services.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLUSTER_PORTS = (7000, 7001, 7002)
CLUSTER_REPLICA_PORT = 7003  # a replica of the first master, for the failover test
SENTINEL_MASTER_PORT, SENTINEL_REPLICA_PORT = 7010, 7011
SENTINEL_PORTS = (7020, 7021, 7022)
SENTINEL_NAME = "tiffin-test"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the Redis Cluster and Sentinel tests start "
                    f"their own servers (Debian/Ubuntu: apt-get install redis-server "
                    f"redis-tools; scripts/services.sh installs them)", pytrace=False)
    return path


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM when the test process ends, even killed with
    # SIGKILL, so no run leaves servers on the ports for the next one.
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    out = subprocess.run([_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
                         capture_output=True, text=True, timeout=timeout)
    return out.stdout


def _wait(what: str, ready, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Servers:
    """Owns redis-server processes by port, so a test can kill and restart one."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[int, subprocess.Popen] = {}
        self.argv: dict[int, list[str]] = {}

    def start(self, port: int, *args: str, conf: str | None = None) -> None:
        if _cli(port, "PING").strip() == "PONG":
            raise RuntimeError(f"port {port} already has a Redis server (a leftover of an "
                               f"earlier run?); stop it first")
        data = self.root / str(port)
        data.mkdir(parents=True, exist_ok=True)
        argv = [_binary("redis-server")]
        if conf is not None:
            (data / "redis.conf").write_text(conf)
            argv.append(str(data / "redis.conf"))
        argv += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                 "--save", "", "--appendonly", "no", "--protected-mode", "no",
                 # A replica syncs at once, not after the default 5 s wait for others.
                 "--repl-diskless-sync-delay", "0", *args]
        self.argv[port] = argv
        self._spawn(port)

    def _spawn(self, port: int) -> None:
        log = open(self.root / f"{port}.log", "ab")  # noqa: SIM115 - closed with the process
        try:
            self.procs[port] = subprocess.Popen(
                self.argv[port], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        finally:
            log.close()
        _wait(f"redis-server on port {port}", lambda: _cli(port, "PING").strip() == "PONG")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        self._spawn(port)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()


def start_cluster(root: Path) -> Servers:
    """Three masters, slots spread by redis-cli, and a replica of the first one."""
    servers = Servers(root)
    try:
        for port in (*CLUSTER_PORTS, CLUSTER_REPLICA_PORT):
            servers.start(port, "--cluster-enabled", "yes", "--cluster-config-file",
                          str(root / str(port) / "nodes.conf"),
                          "--cluster-node-timeout", "2000")
        out = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in CLUSTER_PORTS), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        master_id = _cli(CLUSTER_PORTS[0], "CLUSTER", "MYID").strip()
        out = subprocess.run(
            [_binary("redis-cli"), "--cluster", "add-node", f"127.0.0.1:{CLUSTER_REPLICA_PORT}",
             f"127.0.0.1:{CLUSTER_PORTS[0]}", "--cluster-slave", "--cluster-master-id",
             master_id], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster add-node failed: {out.stdout}{out.stderr}")
        _wait("the cluster replica's sync", lambda: "master_link_status:up" in _cli(
            CLUSTER_REPLICA_PORT, "INFO", "replication"))
        for port in (*CLUSTER_PORTS, CLUSTER_REPLICA_PORT):
            _wait(f"cluster state ok on {port}", lambda port=port: cluster_ok(port))
    except BaseException:
        servers.stop()
        raise
    return servers


def cluster_ok(port: int) -> bool:
    """The node sees every slot served (cluster_state:ok)."""
    return "cluster_state:ok" in _cli(port, "CLUSTER", "INFO")


def cluster_role(port: int) -> str:
    return _cli(port, "ROLE").split("\n", 1)[0].strip()


def start_sentinel(root: Path) -> Servers:
    """A master, one replica, and three sentinels (quorum 2) that fail over in ~1-2 s."""
    servers = Servers(root)
    try:
        servers.start(SENTINEL_MASTER_PORT)
        servers.start(SENTINEL_REPLICA_PORT, "--replicaof", "127.0.0.1",
                      str(SENTINEL_MASTER_PORT))
        _wait("the replica's sync", lambda: "master_link_status:up" in _cli(
            SENTINEL_REPLICA_PORT, "INFO", "replication"))
        conf = (f"sentinel monitor {SENTINEL_NAME} 127.0.0.1 {SENTINEL_MASTER_PORT} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_NAME} 1000\n"
                f"sentinel failover-timeout {SENTINEL_NAME} 5000\n"
                f"sentinel parallel-syncs {SENTINEL_NAME} 1\n")
        for port in SENTINEL_PORTS:
            servers.start(port, "--sentinel", conf=conf)
        for port in SENTINEL_PORTS:
            # A failover needs the replica known and a majority of sentinels in touch.
            _wait(f"sentinel {port} to see its peers and the replica", lambda port=port: (
                _cli(port, "SENTINEL", "replicas", SENTINEL_NAME).count("\nip\n") >= 1
                and _cli(port, "SENTINEL", "sentinels", SENTINEL_NAME).count("\nip\n") >= 2))
    except BaseException:
        servers.stop()
        raise
    return servers


def sentinel_group_ok() -> bool:
    """The sentinels name a master and the other server replicates it."""
    try:
        _, master = sentinel_master()
    except ValueError:
        return False
    other = SENTINEL_REPLICA_PORT if master == SENTINEL_MASTER_PORT else SENTINEL_MASTER_PORT
    return (cluster_role(master) == "master"
            and "master_link_status:up" in _cli(other, "INFO", "replication")
            and f"master_port:{master}" in _cli(other, "INFO", "replication"))


def sentinel_master(port: int = SENTINEL_PORTS[0]) -> tuple[str, int]:
    host, master_port = _cli(port, "SENTINEL", "get-master-addr-by-name",
                             SENTINEL_NAME).split()
    return host, int(master_port)
