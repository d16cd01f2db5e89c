"""The online read's hot path: Feast's response JSON, and a plain ASGI layer in front of FastAPI.

FastAPI's per-request machinery (routing, dependency solving, pydantic, Response
objects) costs more than the online read itself when a request asks for a few
features. ``ServingLayer`` answers a well-formed ``POST /get-online-features``
directly and hands every other request, including any body it does not
recognise, to FastAPI unchanged, so validation errors, docs and the OpenAPI
document stay FastAPI's. It also records the request metrics for every path.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import orjson

from tiffin.online.reader import OnlineResponse
from tiffin.types import from_micros

log = logging.getLogger("tiffin.server")

EPOCH_ISO = "1970-01-01T00:00:00Z"
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=_JSON_OPTIONS)


class _IsoStamps(dict):
    """Epoch microseconds -> Feast's timestamp text, shared by all requests.

    Rows of one source share few distinct event times (hourly or daily batches), so
    nearly every lookup is a hit; the cache is dropped when it grows past a bound.
    """

    LIMIT = 200_000

    def __missing__(self, t: int | None) -> str:
        if len(self) >= self.LIMIT:
            self.clear()
            self[None] = self[0] = EPOCH_ISO
        text = self[t] = from_micros(t).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
        return text


_STAMPS = _IsoStamps({None: EPOCH_ISO, 0: EPOCH_ISO})


def online_json(resp: OnlineResponse) -> dict[str, Any]:
    """Feast's response shape: entity columns first, one result per column."""
    results = []
    for values in resp.entity_columns.values():
        results.append({"values": values, "statuses": ["PRESENT"] * len(values),
                        "event_timestamps": [EPOCH_ISO] * len(values)})
    stamp = _STAMPS.__getitem__
    texts: dict[int, list[str]] = {}  # the features of one view share their times
    for name, values in resp.feature_columns.items():
        ts = resp.event_timestamps_us(name)
        stamps = texts.get(id(ts))
        if stamps is None:
            stamps = texts[id(ts)] = list(map(stamp, ts))
        results.append({"values": values, "statuses": resp.status_names(name),
                        "event_timestamps": stamps})
    return {"metadata": {"feature_names": resp.feature_names}, "results": results}


_FIELDS = {"features", "feature_service", "entities", "full_feature_names"}
_JSON_HEADERS = [(b"content-type", b"application/json")]


def plain_request(body: bytes) -> tuple[list[str] | None, str | None, dict[str, list[Any]], bool] | None:
    """The request's fields when the body is exactly the documented shape, else None.

    None sends the request to FastAPI, whose validation decides (coercions, 422s), so the
    fast path never answers differently from the declared schema, only sooner.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    features, service = doc.get("features"), doc.get("feature_service")
    entities, full = doc.get("entities"), doc.get("full_feature_names", False)
    if type(entities) is not dict or type(full) is not bool:
        return None
    if features is not None and (type(features) is not list
                                 or not all(type(f) is str for f in features)):
        return None
    if service is not None and type(service) is not str:
        return None
    if not all(type(v) is list for v in entities.values()):
        return None
    return features, service, entities, full


class ServingLayer:
    """Outermost ASGI app: request metrics for every path, and the online read's fast path.

    ``await online(features, feature_service, entities, full_feature_names)`` gives
    ``(status, body)``; it must turn tiffin's errors into their JSON answers itself.
    """

    def __init__(self, app: Any, metrics: Any,
                 online: Callable[[list[str] | None, str | None, dict[str, list[Any]], bool],
                                  Awaitable[tuple[int, bytes]]]):
        self.app, self.metrics, self.online = app, metrics, online

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("tiffin.served"):
            await self.app(scope, receive, send)  # (or an outer ServingLayer has it)
            return
        scope["tiffin.served"] = True
        started = time.perf_counter()
        status = 500
        try:
            if scope["path"] == "/get-online-features" and scope["method"] == "POST" \
                    and _is_json(scope):
                body = await _read_body(receive)
                if body is None:  # the client went away
                    status = 499
                    return
                parsed = plain_request(body)
                if parsed is not None:
                    try:
                        status, payload = await self.online(*parsed)
                    except Exception:  # a bug: logged, and answered in our error format
                        log.exception("server fault on /get-online-features")
                        status, payload = 500, dumps({"error": {
                            "type": "InternalServerError", "message": "internal server error"}})
                    await send({"type": "http.response.start", "status": status,
                                "headers": [*_JSON_HEADERS,
                                            (b"content-length", str(len(payload)).encode())]})
                    await send({"type": "http.response.body", "body": payload})
                    return
                receive = _replay(body, receive)

            async def send_status(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)


def _is_json(scope: dict) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


async def _read_body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that yields the body already read, then defers to the real one."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
