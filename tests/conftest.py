"""Shared fixtures: a real Celery worker on the test broker, users in each role, the capture buffer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connection

from jobmonitor.celery import app as celery_app
from monitoring import capture

from . import factories


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The SQLite pass (tests.settings_sqlite) runs only the tests marked for it.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        skip = pytest.mark.skip(reason="PostgreSQL pass only")
        for item in items:
            if "sqlite" not in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def celery_session_app():
    """The project's Celery app, its broker emptied once per session."""
    celery_app.conf.task_always_eager = False
    with celery_app.connection_for_write() as conn:
        for queue in ("default", "emails", "reports", "media", "other"):
            conn.default_channel.queue_purge(queue) if _queue_exists(conn, queue) else None
    return celery_app


def _queue_exists(conn, name: str) -> bool:
    try:
        conn.default_channel.queue_declare(queue=name, passive=True)
    except Exception:
        return False
    return True


@pytest.fixture
def celery_worker(celery_session_app, transactional_db) -> Iterator[object]:
    """A real Celery worker (solo pool, in a thread) consuming the test queues."""
    with start_worker(celery_session_app, pool="solo", concurrency=1, perform_ping_check=False,
                      queues=["default", "other"], shutdown_timeout=10) as worker:
        # Broadcasts (revoke, cancel_consumer) are fanned out to listeners present at send time: wait until the
        # worker's control consumer answers, or a test's first broadcast can be lost.
        factories.wait_until(lambda: celery_session_app.control.ping([worker.hostname], timeout=0.5), timeout=20)
        yield worker
    capture.flush()


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Cached broker depths and worker reports never leak from one test into the next."""
    from django.core.cache import cache

    from monitoring import workers

    cache.clear()
    workers.reset()
    yield
    cache.clear()
    workers.reset()


# Tests whose database work is committed (not rolled back), so the background flusher may write for them.
COMMITTING_FIXTURES = {"transactional_db", "live_server", "celery_worker"}


@pytest.fixture(autouse=True)
def empty_capture_buffer(request: pytest.FixtureRequest) -> Iterator[None]:
    """No buffered event leaks from one test into the next.

    Outside committing tests the flusher thread stays idle: it writes on its own connection, which commits
    outside the test's transaction, so a task a test publishes would stay in the database after the test.
    Such tests write with ``capture.flush()``, on their own connection, rolled back with them.
    """
    capture.buffer.discard()
    capture.buffer.background = bool(COMMITTING_FIXTURES & set(request.fixturenames))
    yield
    capture.buffer.discard()
    capture.buffer.background = True


@pytest.fixture
def viewer(db):
    return factories.user("viewer")


@pytest.fixture
def operator(db):
    return factories.user("operator")


@pytest.fixture
def superuser(db):
    return factories.user("superuser")


@pytest.fixture
def sql_vendor() -> str:
    return connection.vendor
