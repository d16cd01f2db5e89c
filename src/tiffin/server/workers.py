"""``tiffin serve --workers N``: uvicorn's own worker processes, with metrics summed.

uvicorn binds one listening socket, starts N worker processes that accept from it,
restarts a worker that dies and stops them all on SIGINT or SIGTERM (all of it
``uvicorn.run``'s public ``workers`` option). What tiffin adds is the metrics
directory: workers count in files of one directory (prometheus_client's
multiprocess mode), so ``/metrics`` from any worker covers all of them.

A dealer of our own (one acceptor passing each connection to the worker with the
fewest, over uvicorn's undocumented server internals) was measured beside this and
beside gunicorn with uvicorn-worker (benchmarks/serve.py --serve-variants) and did
not win consistently: ahead at 100 entities in one run, level in the next, behind
at 1 entity in both, on a 2-core machine loaded by other work. The shared socket
does spread a burst of connections unevenly (all 16 of wrk's on one of two workers
in some windows; each window's spread is in the benchmark's results).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from tiffin.server.metrics import MULTIPROC_ENV

APP = "tiffin.server.app:app_from_env"


def run(host: str, port: int, workers: int, **options: Any) -> None:
    """Serve with ``workers`` processes; ``options`` go to ``uvicorn.run``."""
    import uvicorn

    if workers <= 1:
        uvicorn.run(APP, factory=True, host=host, port=port, **options)
        return
    # Set before the workers start (spawned, so they inherit it) and import
    # prometheus_client, which picks its value storage once, at import.
    own_metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_metrics_dir = tempfile.mkdtemp(prefix="tiffin-metrics-")
        os.environ[MULTIPROC_ENV] = own_metrics_dir
    try:
        uvicorn.run(APP, factory=True, host=host, port=port, workers=workers, **options)
    finally:
        if own_metrics_dir is not None:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(own_metrics_dir, ignore_errors=True)
