"""The HTTP feature server: Feast's JSON, tiffin's errors.

Every endpoint uses ``FeatureStore`` only. Errors are JSON
``{"error": {"type": ..., "message": ..., "hint": ...}}``: unknown names 404,
bad input 400 (422 for a body that does not match the schema), a store that
cannot be reached 503. A 500 means a bug in tiffin, never bad input.
The registry is refreshed by a background thread; requests never parse it.

Run it with ``tiffin serve`` (or any ASGI server on ``create_app``).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from tiffin.errors import (
    NotFoundError,
    RequestError,
    TiffinError,
    TransformationError,
)
from tiffin.online.reader import FieldStatus, OnlineResponse
from tiffin.server.metrics import Metrics
from tiffin.store import FeatureStore
from tiffin.types import from_micros

log = logging.getLogger("tiffin.server")
EPOCH_ISO = "1970-01-01T00:00:00Z"


class GetOnlineFeaturesRequest(BaseModel):
    features: list[str] | None = Field(None, description="'view:feature' references")
    feature_service: str | None = Field(None, description="a feature service instead")
    entities: dict[str, list[Any]] = Field(..., description="join key -> values, one per row")
    full_feature_names: bool = False


class PushRequest(BaseModel):
    push_source_name: str
    df: dict[str, list[Any]]
    to: str = "online"
    allow_registry_cache: bool = True


class WriteToOnlineStoreRequest(BaseModel):
    feature_view_name: str
    df: dict[str, list[Any]]
    allow_registry_cache: bool = True


class MaterializeRequest(BaseModel):
    start_ts: str
    end_ts: str
    feature_views: list[str] | None = None


class MaterializeIncrementalRequest(BaseModel):
    end_ts: str
    feature_views: list[str] | None = None


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content, default=_default,
                                 option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
                    status_code=status, media_type="application/json")


def error_response(status: int, kind: str, message: str, hint: str | None = None) -> Response:
    body: dict[str, Any] = {"type": kind, "message": message}
    if hint:
        body["hint"] = hint
    return json_response({"error": body}, status)


def status_of(e: TiffinError) -> int:
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, (RequestError, TransformationError)) or isinstance(e, ValueError):
        return 400
    if e.transient:
        return 503
    return 500


_STATUS_NAMES = {s: s.name for s in FieldStatus}


def online_json(resp: OnlineResponse) -> dict[str, Any]:
    """Feast's response shape: entity columns first, one result per column."""
    results = []
    for values in resp.entity_columns.values():
        results.append({"values": values, "statuses": ["PRESENT"] * len(values),
                        "event_timestamps": [EPOCH_ISO] * len(values)})
    statuses = resp.statuses
    iso: dict[int | None, str] = {None: EPOCH_ISO, 0: EPOCH_ISO}  # rows share timestamps
    for name, values in resp.feature_columns.items():
        stamps = []
        for t in resp.event_timestamps_us(name):
            text = iso.get(t)
            if text is None:
                text = iso[t] = from_micros(t).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
            stamps.append(text)
        results.append({"values": values,
                        "statuses": [_STATUS_NAMES[s] for s in statuses[name]],
                        "event_timestamps": stamps})
    return {"metadata": {"feature_names": resp.feature_names}, "results": results}


class _Observe:
    """Request counts and latency per endpoint, as plain ASGI middleware (Starlette's
    BaseHTTPMiddleware costs more than a whole online read)."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - started)


class _RegistryRefresher:
    """Refreshes the registry snapshot in the background so requests only read a cache."""

    def __init__(self, store: FeatureStore, interval: float):
        self.store, self.interval = store, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tiffin-registry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.refresh_registry()
            except Exception:  # keep serving the last good snapshot
                log.exception("registry refresh failed; serving the previous snapshot")


def create_app(store: FeatureStore | None = None, registry_ttl_seconds: float = 5.0) -> FastAPI:
    """The ASGI app. Without ``store``, the repository comes from $TIFFIN_REPO_PATH (or .)."""
    if store is None:
        store = FeatureStore(repo_path=os.environ.get("TIFFIN_REPO_PATH", "."))
    # Requests use the cached snapshot; only the background thread refreshes it.
    store.registry.cache_ttl_seconds = 0
    store.refresh_registry()
    metrics = Metrics(store.project)
    refresher = _RegistryRefresher(store, registry_ttl_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        refresher.start()
        yield
        refresher.stop()
        store.close()

    app = FastAPI(title="tiffin feature server", version="1", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(TiffinError)
    async def tiffin_error(request: Request, e: TiffinError) -> Response:
        status = status_of(e)
        if status == 500:
            log.error("server fault on %s: %s", request.url.path, e)
        return error_response(status, type(e).__name__, e.message, e.hint)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError) -> Response:
        parts = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(422, "InvalidRequestBody", "; ".join(parts) or "invalid body")

    app.add_middleware(_Observe, metrics=metrics)

    @app.post("/get-online-features")
    async def get_online_features(body: GetOnlineFeaturesRequest) -> Response:
        if (body.features is None) == (body.feature_service is None):
            raise RequestError("pass exactly one of 'features' and 'feature_service'")
        features: Any = body.features if body.features is not None else \
            store.get_feature_service(body.feature_service)  # type: ignore[arg-type]
        started = time.perf_counter()
        resp = store.get_online_features(features, body.entities, body.full_feature_names)
        metrics.online_store_latency.observe(time.perf_counter() - started)
        return json_response(online_json(resp))

    @app.post("/push")
    async def push(body: PushRequest) -> Response:
        rows = store.push(body.push_source_name, body.df, to=body.to,
                          allow_registry_cache=body.allow_registry_cache)
        metrics.pushed(body.push_source_name, rows, body.df, store)
        return json_response({"rows": rows})

    @app.post("/write-to-online-store")
    async def write_to_online_store(body: WriteToOnlineStoreRequest) -> Response:
        rows = store.write_to_online_store(body.feature_view_name, body.df,
                                           allow_registry_cache=body.allow_registry_cache)
        return json_response({"rows": rows})

    @app.post("/materialize")
    def materialize(body: MaterializeRequest) -> Response:
        results = store.materialize(body.start_ts, body.end_ts, body.feature_views)
        metrics.materialized(results)
        return json_response({"feature_views": [
            {"name": r.view, "rows": r.rows, "max_event_timestamp": r.max_event_ts}
            for r in results]})

    @app.post("/materialize-incremental")
    def materialize_incremental(body: MaterializeIncrementalRequest) -> Response:
        results = store.materialize_incremental(body.end_ts, body.feature_views)
        metrics.materialized(results)
        return json_response({"feature_views": [
            {"name": r.view, "rows": r.rows, "max_event_timestamp": r.max_event_ts}
            for r in results]})

    @app.get("/health")
    def health() -> Response:
        try:
            store.registry.refresh()
            views = store.list_feature_views()
            if store.config.online_store is not None and views:
                store.online_store.ping()
        except Exception as e:
            return error_response(503, type(e).__name__, str(e))
        return json_response({"status": "ok", "project": store.project})

    @app.get("/metrics")
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``tiffin serve`` workers: the repository comes from the environment."""
    store = FeatureStore(repo_path=os.environ.get("TIFFIN_REPO_PATH", "."),
                         fs_yaml_file=os.environ.get("TIFFIN_FS_YAML") or None)
    return create_app(store, float(os.environ.get("TIFFIN_REGISTRY_TTL", "5")))
