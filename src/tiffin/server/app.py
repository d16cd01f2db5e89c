"""The HTTP feature server: Feast's JSON, tiffin's errors.

Every endpoint uses ``FeatureStore`` only. Errors are JSON
``{"error": {"type": ..., "message": ..., "hint": ...}}``: unknown names 404,
bad input 400 (422 for a body that does not match the schema), a store that
cannot be reached 503, all declared in the OpenAPI document. A 500 means a bug
in tiffin, never bad input.
The registry is refreshed by a background thread; requests never parse it.
Nothing blocks the event loop: online reads await their store (or run in a
thread, for a store without an async path), and writes (``/push``,
``/write-to-online-store``) and the synchronous endpoints run in worker threads,
so a slow store holds up only the requests that wait on it.

Run it with ``tiffin serve`` (or any ASGI server on ``create_app``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from http import HTTPStatus
from typing import Any, Literal

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from tiffin.errors import (
    NotFoundError,
    RequestError,
    TiffinError,
    TransformationError,
)
from tiffin.server.fast import ServingLayer, dumps, online_json
from tiffin.server.metrics import Metrics
from tiffin.store import FeatureStore

log = logging.getLogger("tiffin.server")


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


# Response shapes, for the OpenAPI document only: handlers build their JSON directly (orjson),
# so these never validate or serialize anything at request time.
class ErrorDetail(BaseModel):
    type: str = Field(..., description="error class, e.g. 'FeatureViewNotFoundError'")
    message: str
    hint: str | None = Field(None, description="what to do about it, when known")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class FeatureResult(BaseModel):
    values: list[Any]
    statuses: list[Literal["INVALID", "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]]
    event_timestamps: list[datetime]


class FeatureMetadata(BaseModel):
    feature_names: list[str]


class GetOnlineFeaturesResponse(BaseModel):
    metadata: FeatureMetadata
    results: list[FeatureResult] = Field(..., description="entity columns first, then features")


class RowsResponse(BaseModel):
    rows: int


class MaterializedView(BaseModel):
    name: str
    rows: int
    max_event_timestamp: datetime | None


class MaterializeResponse(BaseModel):
    feature_views: list[MaterializedView]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    project: str


_ERRORS = {400: "Bad input: wrong names, types or values", 404: "An unknown name",
           422: "A body that does not match the schema", 503: "A store cannot be reached"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _ERRORS[code]} for code in codes}


def json_response(content: Any, status: int = 200) -> Response:
    return Response(dumps(content), status_code=status, media_type="application/json")


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


class _FeatureServer(FastAPI):
    """FastAPI, with HTTP requests entering through a ServingLayer first.

    The ServingLayer is also the innermost middleware, so an embedding application's
    own middleware (added to this app later: auth, CORS) still sees every request:
    while there is none, requests skip Starlette's stack on the way in.
    """

    serving: ServingLayer | None = None
    own_middleware = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.serving is not None and scope["type"] == "http" \
                and len(self.user_middleware) == self.own_middleware:
            await self.serving(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(store: FeatureStore | None = None, registry_ttl_seconds: float = 5.0,
               write_threads: int = 8) -> FastAPI:
    """The ASGI app. Without ``store``, the repository comes from $TIFFIN_REPO_PATH (or .).

    ``write_threads`` bounds the writes (pushes, online writes) running at once; more
    wait their turn, without holding the threads of the other endpoints.
    """
    if store is None:
        store = FeatureStore(repo_path=os.environ.get("TIFFIN_REPO_PATH", "."))
    # Requests use the cached snapshot; only the background thread refreshes it.
    store.registry.cache_ttl_seconds = 0
    store.refresh_registry()
    metrics = Metrics(store)
    refresher = _RegistryRefresher(store, registry_ttl_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        refresher.start()
        yield
        refresher.stop()
        # On this loop's thread: the store's async clients belong to it.
        await store.aclose()

    app = _FeatureServer(title="tiffin feature server", version="1", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(TiffinError)
    async def tiffin_error(request: Request, e: TiffinError) -> Response:
        status = status_of(e)
        if status == 500:
            log.error("server fault on %s: %s", request.url.path, e)
        return error_response(status, type(e).__name__, e.message, e.hint)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        # Starlette's own errors (unknown path or method, a body that cannot be read) in our format.
        try:
            kind = HTTPStatus(e.status_code).phrase.title().replace(" ", "").replace("-", "")
        except ValueError:
            kind = "HTTPError"
        resp = error_response(e.status_code, kind, str(e.detail))
        resp.headers.update(e.headers or {})
        return resp

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError) -> Response:
        parts = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(422, "InvalidRequestBody", "; ".join(parts) or "invalid body")

    async def online(features: list[str] | None, feature_service: str | None,
                     entities: dict[str, list[Any]], full_feature_names: bool
                     ) -> tuple[int, bytes]:
        """The online read for both the fast path and the FastAPI route: (status, JSON)."""
        try:
            if (features is None) == (feature_service is None):
                raise RequestError("pass exactly one of 'features' and 'feature_service'")
            wanted: Any = features if features is not None else \
                store.get_feature_service(feature_service)  # type: ignore[arg-type]
            started = time.perf_counter()
            # Awaited: while a networked store (Redis) answers, the worker serves others.
            resp = await store.get_online_features_async(wanted, entities, full_feature_names)
            metrics.online_store_latency.observe(time.perf_counter() - started)
            return 200, dumps(online_json(resp))
        except TiffinError as e:
            status = status_of(e)
            if status == 500:
                log.error("server fault on /get-online-features: %s", e)
            body: dict[str, Any] = {"type": type(e).__name__, "message": e.message}
            if e.hint:
                body["hint"] = e.hint
            return status, dumps({"error": body})

    # In front of everything, Starlette's middleware stack included: metrics for every
    # request, and well-formed online reads answered without FastAPI's per-request
    # machinery (see tiffin.server.fast).
    app.add_middleware(ServingLayer, metrics=metrics, online=online)
    app.own_middleware = len(app.user_middleware)
    app.serving = ServingLayer(partial(FastAPI.__call__, app), metrics=metrics, online=online)

    @app.post("/get-online-features", response_model=GetOnlineFeaturesResponse,
              responses=errors(400, 404, 422, 503))
    async def get_online_features(body: GetOnlineFeaturesRequest) -> Response:
        # Reached only for bodies the fast path passed on (after FastAPI's coercions).
        status, payload = await online(body.features, body.feature_service, body.entities,
                                 body.full_feature_names)
        return Response(payload, status_code=status, media_type="application/json")

    limiter: list[anyio.CapacityLimiter] = []  # made on first use: it needs a running loop

    async def in_write_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not limiter:
            limiter.append(anyio.CapacityLimiter(write_threads))
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs),
                                              limiter=limiter[0])

    @app.post("/push", response_model=RowsResponse, responses=errors(400, 404, 422, 503))
    async def push(body: PushRequest) -> Response:
        rows = await in_write_thread(store.push, body.push_source_name, body.df, to=body.to,
                                     allow_registry_cache=body.allow_registry_cache)
        metrics.rows_pushed.labels(body.push_source_name).inc(rows)
        return json_response({"rows": rows})

    @app.post("/write-to-online-store", response_model=RowsResponse,
              responses=errors(400, 404, 422, 503))
    async def write_to_online_store(body: WriteToOnlineStoreRequest) -> Response:
        rows = await in_write_thread(store.write_to_online_store, body.feature_view_name,
                                     body.df, allow_registry_cache=body.allow_registry_cache)
        return json_response({"rows": rows})

    # The endpoints below are plain functions on purpose: FastAPI runs them in its worker
    # threads (materializing, and /health's registry read and store ping, wait on I/O).

    @app.post("/materialize", response_model=MaterializeResponse,
              responses=errors(400, 404, 422, 503))
    def materialize(body: MaterializeRequest) -> Response:
        results = store.materialize(body.start_ts, body.end_ts, body.feature_views)
        return json_response({"feature_views": [
            {"name": r.view, "rows": r.rows, "max_event_timestamp": r.max_event_ts}
            for r in results]})

    @app.post("/materialize-incremental", response_model=MaterializeResponse,
              responses=errors(400, 404, 422, 503))
    def materialize_incremental(body: MaterializeIncrementalRequest) -> Response:
        results = store.materialize_incremental(body.end_ts, body.feature_views)
        return json_response({"feature_views": [
            {"name": r.view, "rows": r.rows, "max_event_timestamp": r.max_event_ts}
            for r in results]})

    @app.get("/health", response_model=HealthResponse, responses=errors(503))
    def health() -> Response:
        try:
            store.registry.refresh()
            views = store.list_feature_views()
            if store.config.online_store is not None and views:
                store.online_store.ping()
        except Exception as e:
            return error_response(503, type(e).__name__, str(e))
        return json_response({"status": "ok", "project": store.project})

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``tiffin serve`` workers: the repository comes from the environment."""
    store = FeatureStore(repo_path=os.environ.get("TIFFIN_REPO_PATH", "."),
                         fs_yaml_file=os.environ.get("TIFFIN_FS_YAML") or None)
    app = create_app(store, float(os.environ.get("TIFFIN_REGISTRY_TTL", "5")))
    # A 100-entity answer allocates thousands of short-lived objects, nearly all freed by
    # reference counting; the default gen-0 threshold (700 allocations) would still run
    # the cycle collector several times per request. Startup objects are frozen out of
    # every collection; cycles are still collected, just less often.
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    return app
