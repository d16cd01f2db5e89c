"""Start tiffin's feature server another way, for ``serve.py --serve-variants``.

    python benchmarks/serve_launch.py VARIANT --port P --workers N   (cwd: the feature repo)

Every variant serves the same app (``tiffin.server.app:app_from_env``) with the
options ``tiffin serve`` gives uvicorn (no access log, no proxy-header rewriting) and
a Prometheus multiprocess directory set up the same way, so that the only difference
is who runs the worker processes:

* ``uvicorn-workers``: ``uvicorn.run(..., workers=N)``, uvicorn's own supervisor (one
  listening socket shared by the workers, each accepting for itself), which is what
  ``tiffin serve --workers N`` runs: as a variant it is a control, the same server
  measured twice;
* ``gunicorn``: gunicorn's arbiter with the ``uvicorn-worker`` package's worker class
  (likewise one shared listening socket).

(``tiffin``, the ``tiffin serve`` command, is started by serve.py directly.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

APP = "tiffin.server.app:app_from_env"
# What `tiffin serve` passes to uvicorn (see tiffin/cli.py).
OPTIONS = {"access_log": False, "log_level": "warning", "proxy_headers": False}
VARIANTS = ("uvicorn-workers", "gunicorn")


def _gunicorn(host: str, port: int, workers: int) -> None:
    from gunicorn.app.base import BaseApplication
    from uvicorn_worker import UvicornWorker

    class Worker(UvicornWorker):
        # The worker class's documented way of passing options to uvicorn.Config.
        CONFIG_KWARGS = {"loop": "auto", "http": "auto", "proxy_headers": False,
                         "access_log": False}

    class App(BaseApplication):
        def load_config(self) -> None:
            for key, value in {"bind": f"{host}:{port}", "workers": workers,
                               "worker_class": Worker, "loglevel": "warning",
                               # uvicorn's default keep-alive, not gunicorn's 2 s
                               "keepalive": 5}.items():
                self.cfg.set(key, value)

        def load(self):
            from tiffin.server.app import app_from_env
            return app_from_env()

    App().run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    os.environ.setdefault("TIFFIN_REPO_PATH", os.getcwd())
    os.environ.setdefault("TIFFIN_REGISTRY_TTL", "5")
    metrics_dir = tempfile.mkdtemp(prefix="tiffin-metrics-")
    # Before anything imports prometheus_client, which picks its value storage once, at
    # import: gunicorn forks its workers from this process (tiffin.server.metrics would
    # import it, so the variable's name is spelled out here).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        if a.variant == "uvicorn-workers":
            import uvicorn
            uvicorn.run(APP, factory=True, host=a.host, port=a.port, workers=a.workers,
                        **OPTIONS)
        else:
            _gunicorn(a.host, a.port, a.workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
