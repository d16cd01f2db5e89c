"""Prometheus metrics for the feature server (its own registry: no global state).

Counters and histograms count this process's requests. Under ``tiffin serve
--workers N`` each worker is its own process, so the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` and every worker's values live in files there
(prometheus_client's multiprocess mode): a scrape answered by any worker sums
them all.

Freshness is not counted here but read from the online store at scrape time:
the newest event time each view was ever given, by whatever wrote it (this
server's pushes, another worker, a `tiffin materialize` job). So it measures how
old the newest data is, not how long ago this process last wrote.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("tiffin.server")

# Sub-millisecond buckets: the interesting part of an online read is well under 10 ms.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
           5.0)
KNOWN = {"/get-online-features", "/push", "/write-to-online-store", "/materialize",
         "/materialize-incremental", "/health", "/metrics"}
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Freshness:
    """A collector: per view, the newest event time in the online store and its age."""

    def __init__(self, store: Any):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        newest = GaugeMetricFamily("tiffin_newest_event_timestamp_seconds",
                                   "Newest event time written online, per view",
                                   labels=["feature_view"])
        age = GaugeMetricFamily("tiffin_feature_freshness_seconds",
                                "Now minus the newest event time written online, per view",
                                labels=["feature_view"])
        up = GaugeMetricFamily("tiffin_online_store_up",
                               "1 if the online store answered this scrape, else 0")
        if self.store.config.online_store is None:  # online_store: null, nothing to watch
            return
        try:
            views = self.store.list_feature_views()
            times = self.store.online_store.newest_event_times(views) if views else {}
            up.add_metric([], 1)
        except Exception as e:  # a scrape must answer even while the store is down
            log.warning("metrics: cannot read event times from the online store: %s", e)
            times = {}
            up.add_metric([], 0)
        now = time.time()
        for view, us in sorted(times.items()):
            newest.add_metric([view], us / 1e6)
            age.add_metric([view], now - us / 1e6)
        yield from (newest, age, up)


class Metrics:
    def __init__(self, store: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter("tiffin_requests_total", "Requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("tiffin_request_latency_seconds", "Request latency",
                                 ["endpoint"], buckets=BUCKETS, registry=self.registry)
        self.online_store_latency = Histogram(
            "tiffin_online_read_latency_seconds", "Online store read and response shaping",
            buckets=BUCKETS, registry=self.registry)
        self.rows_pushed = Counter("tiffin_rows_pushed_total", "Rows accepted by /push",
                                   ["push_source"], registry=self.registry)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.freshness = CollectorRegistry()
        self.freshness.register(_Freshness(store))

    def observe(self, path: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once per (path, status): labels() takes a
        # lock and builds a key on every call, a measurable part of a 1-entity request.
        children = self._children.get((path, status))
        if children is None:
            endpoint = path if path in KNOWN else "other"
            children = (self.requests.labels(endpoint, str(status)).inc,
                        self.latency.labels(endpoint).observe)
            if len(self._children) < 1000:  # unknown paths must not grow it without bound
                self._children[path, status] = children
        children[0]()
        children[1](seconds)

    def render(self) -> tuple[bytes, str]:
        counted = self.registry
        path = os.environ.get(MULTIPROC_ENV)
        if path:  # every worker's values, from their files
            from prometheus_client.multiprocess import MultiProcessCollector
            counted = CollectorRegistry()
            MultiProcessCollector(counted, path=path)
        return generate_latest(counted) + generate_latest(self.freshness), CONTENT_TYPE_LATEST
