"""Prometheus metrics for the feature server (its own registry: no global state)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tiffin.store import to_utc

# Sub-millisecond buckets: the interesting part of an online read is well under 10 ms.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
           5.0)
KNOWN = {"/get-online-features", "/push", "/write-to-online-store", "/materialize",
         "/materialize-incremental", "/health", "/metrics"}


class Metrics:
    def __init__(self, project: str):
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
        # Freshness from event time: how old the newest event written for a view is now.
        self.newest_event = Gauge("tiffin_newest_event_timestamp_seconds",
                                  "Newest event time written online, per view",
                                  ["feature_view"], registry=self.registry)
        self.freshness = Gauge("tiffin_feature_freshness_seconds",
                               "Now minus the newest event time written online, per view",
                               ["feature_view"], registry=self.registry)
        self._newest: dict[str, float] = {}
        self.project = project

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in KNOWN else "other"
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def _saw(self, view: str, ts: float) -> None:
        if ts > self._newest.get(view, float("-inf")):
            self._newest[view] = ts
            self.newest_event.labels(view).set(ts)

    def pushed(self, source: str, rows: int, df: dict[str, list[Any]], store: Any) -> None:
        self.rows_pushed.labels(source).inc(rows)
        for view in store.list_feature_views():
            if view.source.name != source:
                continue
            stamps = df.get(view.source.batch.timestamp_field) or []
            newest = max((to_utc(t).timestamp() for t in stamps if t is not None), default=None)
            if newest is not None:
                self._saw(view.name, newest)

    def materialized(self, results: list[Any]) -> None:
        for r in results:
            if r.max_event_ts is not None:
                self._saw(r.view, r.max_event_ts.timestamp())

    def render(self) -> tuple[bytes, str]:
        now = time.time()
        for view, ts in self._newest.items():
            self.freshness.labels(view).set(now - ts)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
