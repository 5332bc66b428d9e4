"""Fixtures of the control tests: API clients per role, the broker's raw state, worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from jobmonitor.celery import app as celery_app
from monitoring.models import AuditEvent, BulkOperation, IdempotencyRecord, JobRun, QueueState

from .. import factories
from . import tasks  # noqa: F401 - registers the test tasks with the app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def viewer(db):
    return factories.user("viewer")


@pytest.fixture
def operator(db):
    return factories.user("operator")


@pytest.fixture
def api(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def viewer_api(viewer) -> APIClient:
    client = APIClient()
    client.force_authenticate(viewer)
    return client


@pytest.fixture
def broker() -> redis.Redis:
    """A raw client on the test broker, to check messages independently of kombu."""
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def queue_length(broker: redis.Redis, name: str) -> int:
    """Messages waiting in a Redis queue, counted over the priority sub-queues Celery uses."""
    return sum(broker.llen(key) for key in [name, *(f"{name}\x06\x16{p}" for p in (3, 6, 9))])


def purge(*names: str) -> None:
    with celery_app.connection_for_write() as conn:
        for name in names:
            conn.default_channel.queue_purge(name)


def snapshot(broker: redis.Redis) -> dict:
    """Everything a control request could change: job, queue, idempotency and bulk rows, broker queues."""
    lists = {k: broker.llen(k) for k in broker.keys("*") if broker.type(k) == b"list"}
    return {
        "jobs": list(JobRun.objects.order_by("id").values()),
        "queues": list(QueueState.objects.order_by("id").values()),
        "idempotency": list(IdempotencyRecord.objects.values_list("key", flat=True)),
        "bulk": list(BulkOperation.objects.values_list("id", "status")),
        "broker": lists,
    }


class WorkerProcess:
    """A real ``celery worker`` in a subprocess on the test database and broker."""

    def __init__(self, name: str, queues: str, pool: str, log_dir: Path) -> None:
        self.name, self.queues, self.pool = name, queues, pool
        self.hostname = f"{name}@jobmonitor-test"
        self.proc: subprocess.Popen | None = None
        self.log = log_dir / f"{name}.log"

    def start(self, timeout: float = 40) -> WorkerProcess:
        db = connection.settings_dict
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "TEST_BROKER_URL": settings.CELERY_BROKER_URL,
               "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "jobmonitor", "worker", "--pool", self.pool, "-c", "1",
             "-Q", self.queues, "-n", self.hostname, "--include", "tests.control.tasks", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {self.log.read_text()[-3000:]}")
            if celery_app.control.ping(destination=[self.hostname], timeout=0.5):
                return self
        self.stop()
        raise AssertionError(f"worker {self.name} did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def worker_process(transactional_db, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses with ``worker_process(name, queues, pool)``; all are killed at the end."""
    started: list[WorkerProcess] = []

    def start(name: str, queues: str, pool: str = "prefork") -> WorkerProcess:
        worker = WorkerProcess(name, queues, pool, tmp_path)
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def audit_count():
    return lambda: AuditEvent.objects.count()
