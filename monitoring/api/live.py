"""Live streams (Server-Sent Events): the metrics, or one queue's metrics, pushed every interval.

One snapshot per stream key and interval is computed for the whole process (``hub``) and shared by
every open connection, so N viewers cost one computation. Event ids are interval numbers (the same in
every process), so a client reconnecting with ``Last-Event-ID`` gets the next snapshot, not a repeat.
Under ASGI (uvicorn) the stream is an async generator and holds no thread; under WSGI (runserver,
gunicorn) it is a sync generator. Streams are capped per process (``LIVE_MAX_STREAMS``) and end after
``LIVE_MAX_SECONDS``; EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from .. import alerts, conf, metrics
from .views import ReadView, known_queue


@dataclass(frozen=True)
class Snapshot:
    tick: int
    payload: str


class LiveHub:
    """Computes each stream key's snapshot at most once per interval and shares it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self.computations: Counter[str] = Counter()
        self.open_streams = 0

    @staticmethod
    def tick(now: float | None = None) -> int:
        return int((now if now is not None else time.time()) // conf.get("LIVE_INTERVAL"))

    def snapshot(self, key: str, compute: Callable[[], Any]) -> Snapshot:
        """Return this interval's snapshot for ``key``, computing it if no stream has yet."""
        tick = self.tick()
        with self._lock:
            current = self._snapshots.get(key)
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        if current and current.tick >= tick:
            return current
        with key_lock:
            current = self._snapshots.get(key)
            if current and current.tick >= tick:
                return current
            payload = json.dumps(compute(), cls=DjangoJSONEncoder, separators=(",", ":"))
            snapshot = Snapshot(tick, payload)
            with self._lock:
                self._snapshots[key] = snapshot
                self.computations[key] += 1
            return snapshot

    def acquire(self) -> bool:
        with self._lock:
            if self.open_streams >= conf.get("LIVE_MAX_STREAMS"):
                return False
            self.open_streams += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open_streams = max(self.open_streams - 1, 0)

    def reset(self) -> None:
        with self._lock:
            self._snapshots.clear()
            self.computations.clear()


hub = LiveHub()


def _event(snapshot: Snapshot, name: str) -> str:
    return f"id: {snapshot.tick}\nevent: {name}\ndata: {snapshot.payload}\n\n"


def _wait(tick: int) -> float:
    """Seconds until the interval after ``tick`` begins."""
    interval = conf.get("LIVE_INTERVAL")
    return max((tick + 1) * interval - time.time(), 0.0) + 0.01


class _Stream:
    """Shared state of one open stream: its slot is released exactly once, however the stream ends."""

    def __init__(self, key: str, name: str, compute: Callable[[], Any], last_id: int | None) -> None:
        self.key, self.name, self.compute, self.sent = key, name, compute, last_id
        self.deadline = time.monotonic() + conf.get("LIVE_MAX_SECONDS")
        self.released = False
        self.retry_ms = int(conf.get("LIVE_INTERVAL") * 1000)

    def close(self) -> None:
        if not self.released:
            self.released = True
            hub.release()

    def next_event(self, snapshot: Snapshot) -> str | None:
        if self.sent is not None and snapshot.tick <= self.sent:
            return None
        self.sent = snapshot.tick
        return _event(snapshot, self.name)


class SyncStream(_Stream):
    def __iter__(self) -> Iterator[str]:
        try:
            yield f"retry: {self.retry_ms}\n\n"
            while time.monotonic() < self.deadline:
                snapshot = hub.snapshot(self.key, self.compute)
                event = self.next_event(snapshot)
                if event:
                    yield event
                time.sleep(_wait(snapshot.tick))
        finally:
            self.close()


class AsyncStream(_Stream):
    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            yield f"retry: {self.retry_ms}\n\n"
            while time.monotonic() < self.deadline:
                snapshot = await sync_to_async(hub.snapshot)(self.key, self.compute)
                event = self.next_event(snapshot)
                if event:
                    yield event
                await asyncio.sleep(_wait(snapshot.tick))
        finally:
            self.close()


def _last_event_id(request: Request) -> int | None:
    raw = request.META.get("HTTP_LAST_EVENT_ID", "")
    try:
        return int(raw) if raw else None
    except ValueError:
        return None  # an id we never issued: start afresh


def stream_response(request: Request, key: str, name: str, compute: Callable[[], Any]) -> Any:
    """Open a live stream, or answer 503 when the process already serves ``LIVE_MAX_STREAMS``."""
    if not hub.acquire():
        return Response({"detail": f"Too many live streams open (MONITORING['LIVE_MAX_STREAMS'] = "
                                   f"{conf.get('LIVE_MAX_STREAMS')}). Retry later or poll the JSON endpoint."},
                        status=503, headers={"Retry-After": str(int(conf.get("LIVE_INTERVAL")) + 1)})
    stream_class = AsyncStream if isinstance(request._request, ASGIRequest) else SyncStream
    stream = stream_class(key, name, compute, _last_event_id(request))
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    # Django closes the response when it is done with it, also when iteration never started.
    response._resource_closers.append(stream.close)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx must not buffer the stream
    return response


class EventStreamRenderer(BaseRenderer):
    """Lets clients that accept only ``text/event-stream`` (EventSource) in; errors are rendered as JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b"" if data is None else json.dumps(data, cls=DjangoJSONEncoder).encode()


LIVE_DOC = {200: OpenApiResponse(OpenApiTypes.STR, description="text/event-stream of JSON snapshots"),
            403: OpenApiResponse(description="Not authenticated, or not a job monitor viewer."),
            503: OpenApiResponse(description="Too many live streams open in this process.")}


def live_metrics() -> dict[str, Any]:
    """The live stream's snapshot: the metrics plus the open alerts."""
    return {**metrics.metrics(), "alerts": alerts.open_alerts()}


@extend_schema(tags=["live"], responses=LIVE_DOC)
class LiveMetricsView(ReadView):
    """Server-Sent Events: the metrics and open alerts every LIVE_INTERVAL seconds (event ``metrics``)."""

    throttle_scope = "monitoring-live"
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get(self, request: Request) -> Any:
        return stream_response(request, "metrics", "metrics", live_metrics)


@extend_schema(tags=["live"], responses={**LIVE_DOC, 404: OpenApiResponse(description="Unknown queue.")})
class LiveQueueView(ReadView):
    """Server-Sent Events: one queue's metrics with its active jobs (event ``queue``)."""

    throttle_scope = "monitoring-live"
    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def get(self, request: Request, name: str) -> Any:
        known_queue(name)
        return stream_response(request, f"queue:{name}", "queue", lambda: metrics.queue_metrics(name))
