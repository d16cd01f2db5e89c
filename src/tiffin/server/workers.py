"""``tiffin serve --workers N``: one acceptor, N worker processes, connections dealt in turn.

uvicorn's own multi-worker mode shares one listening socket, and Linux hands a burst
of new keep-alive connections to the workers so unevenly (12 of 16 on one worker of
two, in the feature-server benchmark; SO_REUSEPORT's hashing is no better at this
size) that one worker queues three times the requests of the other for as long as
the connections live, and the tail latency follows. Here the parent process accepts
every connection and passes it to a worker over a Unix socket
(SCM_RIGHTS); each worker runs an ordinary uvicorn server on the connections it is
given, and reports back when one closes, so each new connection goes to the worker
with the fewest open ones.

The parent restarts a worker that dies and stops them all on SIGINT or SIGTERM.
Workers count their metrics in files of one directory (prometheus_client's
multiprocess mode), so ``/metrics`` from any worker covers all of them.

Measured beside uvicorn's own ``workers=N`` and gunicorn with uvicorn-worker
(benchmarks/serve.py --serve-variants; 2 workers, 16 connections, on a 2-core machine
shared with other loads), this dealer's 100-entity throughput was 18-24% higher
(median of 4 interleaved windows; ahead in 13 of 16 window pairs) and its p99 lower
with SQLite; 1-entity throughput was no better. CPU time per request was the same
(0.75 ms at 100 entities), so the gain is in where the work lands, not in what it
costs.

Each worker drives uvicorn's ``Server`` by its parts (``startup``/``main_loop``/
``shutdown`` without a socket of its own, the HTTP protocol class built by hand for
each adopted connection). Those are not uvicorn's documented interface: pyproject
bounds uvicorn to the versions tested, and tests/integration/test_server_uvicorn_api.py
exercises exactly that surface, so an upgrade that moves it fails the suite.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from functools import partial
from typing import Any

from tiffin.server.metrics import MULTIPROC_ENV


def _worker(channel: socket.socket, options: dict[str, Any]) -> None:
    import uvicorn

    config = uvicorn.Config("tiffin.server.app:app_from_env", factory=True, **options)
    server = uvicorn.Server(config)

    async def serve() -> None:
        if not config.loaded:
            config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[])  # no listening socket of its own
        if server.should_exit:
            return
        loop = asyncio.get_running_loop()
        make = partial(config.http_protocol_class, config=config,
                       server_state=server.server_state, app_state=server.lifespan.state)
        channel.setblocking(False)

        def protocol() -> Any:
            # Tell the parent when a connection ends, so it deals the next one to the
            # worker with the fewest open connections.
            proto = make()
            lost = proto.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                try:
                    channel.send(b"-")
                except OSError:
                    pass
                lost(exc)

            proto.connection_lost = connection_lost
            return proto

        def adopt() -> None:
            while True:
                try:
                    _, fds, _, _ = socket.recv_fds(channel, 1, 16)
                except BlockingIOError:
                    return
                except OSError:
                    server.should_exit = True
                    return
                if not fds:  # the parent went away
                    server.should_exit = True
                    loop.remove_reader(channel.fileno())
                    return
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    conn.setblocking(False)
                    loop.create_task(loop.connect_accepted_socket(protocol, conn))

        loop.add_reader(channel.fileno(), adopt)
        await server.main_loop()
        await server.shutdown(sockets=[])

    def exit_(*_: Any) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, exit_)
    signal.signal(signal.SIGINT, exit_)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def run(host: str, port: int, workers: int, **options: Any) -> None:
    """Serve with ``workers`` processes; ``options`` go to ``uvicorn.Config``."""
    if workers <= 1:
        import uvicorn
        uvicorn.run("tiffin.server.app:app_from_env", factory=True, host=host, port=port,
                    **options)
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))  # fails here, in the parent, if the port is taken
    listener.listen(2048)
    # Set before the workers start (spawned, so they inherit it) and import
    # prometheus_client, which picks its value storage once, at import.
    own_metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_metrics_dir = tempfile.mkdtemp(prefix="tiffin-metrics-")
        os.environ[MULTIPROC_ENV] = own_metrics_dir
    try:
        _supervise(listener, workers, options)
    finally:
        if own_metrics_dir is not None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


def _supervise(listener: socket.socket, workers: int, options: dict[str, Any]) -> None:
    """Start the workers, deal them connections until SIGINT/SIGTERM, then stop them."""
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[Any, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        p = ctx.Process(target=_worker, args=(theirs, options), daemon=False)
        p.start()
        theirs.close()
        return p, ours

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    procs: list[tuple[Any, socket.socket]] = []
    try:
        for _ in range(workers):  # (in the try: a failed start stops those started)
            procs.append(start())
        open_conns = [0] * workers
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, -1)
        for i, (_, chan) in enumerate(procs):
            sel.register(chan, selectors.EVENT_READ, i)

        def count_closed(i: int) -> None:
            """Take in worker i's reports of closed connections, one byte each."""
            while True:
                try:
                    closed = len(procs[i][1].recv(4096, socket.MSG_DONTWAIT))
                except OSError:  # none pending (or the worker is gone)
                    return
                if not closed:
                    return
                open_conns[i] = max(0, open_conns[i] - closed)

        while not stopping:
            for key, _ in sel.select(timeout=0.5):
                if key.data >= 0:
                    count_closed(key.data)
                    continue
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                # Reports already sent count before the choice: a client that closes
                # its connections and opens new ones at once (wrk between runs) would
                # otherwise find the counts of one worker stale and get an uneven deal
                # (12 and 4 of 16 was seen).
                for i in range(workers):
                    count_closed(i)
                # Least open connections first; ties in turn.
                for i in sorted(range(workers), key=lambda w: open_conns[w]):
                    p, chan = procs[i]
                    if p.is_alive():
                        try:
                            socket.send_fds(chan, [b"c"], [conn.fileno()])
                            open_conns[i] += 1
                            break
                        except OSError:
                            continue
                conn.close()  # the worker holds its own copy now
            for i, (p, chan) in enumerate(procs):
                if not p.is_alive() and not stopping:
                    print(f"tiffin serve: worker {p.pid} exited ({p.exitcode}); restarting",
                          file=sys.stderr)
                    sel.unregister(chan)
                    chan.close()
                    procs[i] = start()
                    open_conns[i] = 0
                    sel.register(procs[i][1], selectors.EVENT_READ, i)
    finally:
        listener.close()  # first: no new connections while the workers stop
        for p, chan in procs:
            chan.close()
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p, _ in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
