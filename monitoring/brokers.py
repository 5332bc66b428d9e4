"""Talk to the broker: queue depths per transport (Redis, RabbitMQ, the embedded filesystem default).

Depths are cached a few seconds (Django cache) because every dashboard refresh and live stream asks
for them. A broker that cannot be reached gives ``available=False`` and no depths, never an exception.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, current_app
from django.core.cache import cache
from django.utils.module_loading import import_string

from . import conf

logger = logging.getLogger("monitoring.brokers")

# Seconds a depth check may spend connecting before the broker is reported unavailable.
CONNECT_TIMEOUT = 2.0


def celery_app() -> Celery:
    """Return the Celery app to inspect: ``MONITORING['CELERY_APP']`` or the current default app."""
    path = conf.get("CELERY_APP")
    return import_string(path) if path else current_app._get_current_object()


def configured_queue_names(app: Celery | None = None) -> set[str]:
    """Queues named in the Celery configuration (``task_queues``, default queue, routes) and ``KNOWN_QUEUES``."""
    app = app or celery_app()
    names = {app.conf.task_default_queue or "celery"}
    for queue in app.conf.task_queues or ():
        names.add(getattr(queue, "name", None) or str(queue))
    routes = app.conf.task_routes
    for route in (routes.values() if isinstance(routes, dict) else ()):
        if isinstance(route, dict) and route.get("queue"):
            queue = route["queue"]
            names.add(getattr(queue, "name", None) or str(queue))
    names.update(conf.get("KNOWN_QUEUES"))
    return {name for name in names if name}


def read_connection(app: Celery) -> Any:
    """Open a broker connection that gives up quickly instead of retrying for minutes."""
    options = {**(app.conf.broker_transport_options or {}), "max_retries": 1}
    return app.connection_for_read(connect_timeout=CONNECT_TIMEOUT, transport_options=options)


@dataclass
class DepthReport:
    """Messages waiting per queue, or why they could not be read."""

    available: bool
    transport: str
    depths: dict[str, int] = field(default_factory=dict)
    error: str = ""


def queue_depths(names: Iterable[str], *, app: Celery | None = None, use_cache: bool = True) -> DepthReport:
    """Return the number of messages waiting in each named queue (cached ``DEPTH_CACHE_SECONDS``)."""
    app = app or celery_app()
    names = sorted(set(names))
    url = str(app.conf.broker_read_url or app.conf.broker_url or "")
    key = "monitoring:depths:" + hashlib.sha1("\0".join([url, *names]).encode()).hexdigest()
    if use_cache:
        cached = cache.get(key)
        if cached is not None:
            return cached
    report = measure_depths(names, app)
    cache.set(key, report, conf.get("DEPTH_CACHE_SECONDS"))
    return report


def measure_depths(names: list[str], app: Celery) -> DepthReport:
    """Ask the broker now (no cache)."""
    transport = "unknown"
    try:
        with read_connection(app) as connection:
            transport = connection.transport.driver_type
            channel = connection.default_channel
            if hasattr(channel, "_size"):
                # kombu's virtual transports (Redis, filesystem, SQS, ...) count a queue themselves; on Redis
                # that sums the queue's priority sub-lists (name, name\x06\x163, ...) in one pipeline and
                # applies global_keyprefix. A missing queue counts 0.
                depths = {name: int(channel._size(name) or 0) for name in names}
            else:
                depths = _declare_depths(connection, names)
    except Exception as exc:  # any transport error means "unavailable", never a failed page
        logger.warning("Broker depth check failed: %s", exc)
        return DepthReport(available=False, transport=transport, error=f"{type(exc).__name__}: {exc}")
    return DepthReport(available=True, transport=transport, depths=depths)


def _declare_depths(connection: Any, names: list[str]) -> dict[str, int]:
    """AMQP: a passive declare returns the ready messages; a missing queue (404 closes the channel) is 0."""
    depths: dict[str, int] = {}
    channel = connection.channel()
    try:
        for name in names:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors:
                depths[name] = 0
                channel = connection.channel()
    finally:
        try:
            channel.close()
        except Exception:
            logger.debug("closing the depth channel failed", exc_info=True)
    return depths


def purge_queue(app: Any, name: str) -> int:
    """Delete the waiting messages of one queue only and return how many were deleted.

    ``app.control.purge()`` would empty every configured queue, so this goes through the channel of one
    queue instead. On Redis, kombu's ``queue_purge`` also empties the priority sub-queues
    (``name\\x06\\x163`` ...), which hold every message published with a priority above 0. Messages a worker
    has already prefetched (Redis ``unacked``, AMQP unacknowledged) belong to that worker and are not
    touched. A queue the broker does not know has nothing to purge.
    """
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        try:
            return int(channel.queue_purge(name) or 0)
        except conn.channel_errors:
            # RabbitMQ answers NOT_FOUND (and closes the channel) for an undeclared queue.
            return 0
