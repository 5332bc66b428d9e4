"""Which Celery workers are online and which queues they consume (``inspect``), cached.

An inspect call waits ``WORKER_INSPECT_TIMEOUT`` seconds for replies, so pages never make it themselves
once a reply is known: a report older than ``WORKER_CACHE_SECONDS`` is served as it is while one
background thread refreshes it. Only the first call in a process waits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from celery import Celery

from . import conf
from .brokers import celery_app

logger = logging.getLogger("monitoring.workers")


@dataclass
class WorkerReport:
    """Replies to ``inspect().active_queues()``; ``available`` is False when the broker could not be asked."""

    available: bool
    queues_by_worker: dict[str, list[str]] = field(default_factory=dict)
    checked_at: datetime | None = None
    error: str = ""

    @property
    def online(self) -> list[str]:
        return sorted(self.queues_by_worker)

    def consumers(self, queue: str) -> list[str]:
        return sorted(name for name, queues in self.queues_by_worker.items() if queue in queues)


_lock = threading.Lock()
_reports: dict[int, tuple[float, WorkerReport]] = {}
_refreshing: set[int] = set()


def inspect_now(app: Celery) -> WorkerReport:
    """Ask every worker for its queues, waiting at most ``WORKER_INSPECT_TIMEOUT`` seconds."""
    from .brokers import CONNECT_TIMEOUT

    options = {**(app.conf.broker_transport_options or {}), "max_retries": 1}
    try:
        with app.connection_for_write(connect_timeout=CONNECT_TIMEOUT, transport_options=options) as connection:
            connection.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT)
            replies = app.control.inspect(timeout=conf.get("WORKER_INSPECT_TIMEOUT"),
                                          connection=connection).active_queues() or {}
    except Exception as exc:
        logger.warning("Worker inspection failed: %s", exc)
        return WorkerReport(available=False, checked_at=datetime.now(UTC), error=f"{type(exc).__name__}: {exc}")
    queues = {worker: sorted(q.get("name", "") for q in (declared or ()) if isinstance(q, dict))
              for worker, declared in replies.items()}
    return WorkerReport(available=True, queues_by_worker=queues, checked_at=datetime.now(UTC))


def workers(*, app: Celery | None = None, refresh: bool = False) -> WorkerReport:
    """Return the cached worker report, refreshing it in the background when it is stale."""
    app = app or celery_app()
    key = id(app)
    with _lock:
        entry = _reports.get(key)
    if entry is None or refresh:
        report = inspect_now(app)
        with _lock:
            _reports[key] = (time.monotonic(), report)
        return report
    stamp, report = entry
    if time.monotonic() - stamp > conf.get("WORKER_CACHE_SECONDS"):
        with _lock:
            start = key not in _refreshing
            _refreshing.add(key)
        if start:
            threading.Thread(target=_refresh, args=(app, key), name="jobmonitor-inspect", daemon=True).start()
    return report


def _refresh(app: Celery, key: int) -> None:
    try:
        report = inspect_now(app)
        with _lock:
            _reports[key] = (time.monotonic(), report)
    finally:
        with _lock:
            _refreshing.discard(key)


def reset() -> None:
    """Forget cached reports (tests, and after the broker configuration changes)."""
    with _lock:
        _reports.clear()
