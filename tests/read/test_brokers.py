"""Queue depths per broker (Redis with priority sub-queues, the filesystem default), workers, health."""

from __future__ import annotations

import pytest
from celery import Celery
from django.core.cache import cache
from rest_framework.test import APIClient

from jobmonitor import tasks
from monitoring import brokers, metrics, workers

pytestmark = pytest.mark.django_db

DEAD_BROKER = Celery("dead", broker="redis://127.0.0.1:1/0", set_as_current=False)


@pytest.fixture(autouse=True)
def fresh_caches():
    cache.clear()
    workers.reset()
    yield
    cache.clear()
    workers.reset()


def test_redis_depth_sums_priority_sub_queues(celery_session_app):
    queue = "depth-test"
    with celery_session_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue) if conn.default_channel._size(queue) else None
    for priority in (0, 3, 9, 9):
        tasks.add.apply_async((1, 1), queue=queue, priority=priority)
    with celery_session_app.connection_for_read() as conn:
        client = conn.default_channel.client
        lists = {key: client.llen(key) for key in client.keys(f"{queue}*")}
    assert len(lists) >= 2, lists  # the messages really sit in several priority lists
    report = brokers.queue_depths([queue, "empty-queue"], use_cache=False)
    assert report.available and report.transport == "redis"
    assert report.depths == {queue: sum(lists.values()), "empty-queue": 0} and sum(lists.values()) == 4
    with celery_session_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_depths_are_cached_for_a_few_seconds(celery_session_app):
    queue = "cache-test"
    first = brokers.queue_depths([queue])
    tasks.add.apply_async((1, 1), queue=queue)
    assert brokers.queue_depths([queue]).depths == first.depths  # served from the cache
    assert brokers.queue_depths([queue], use_cache=False).depths[queue] == first.depths[queue] + 1
    with celery_session_app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_filesystem_transport_depth(tmp_path):
    folders = {name: tmp_path / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    app = Celery("fs", broker="filesystem://", set_as_current=False)
    app.conf.broker_transport_options = {"data_folder_in": str(folders["queue"]),
                                         "data_folder_out": str(folders["queue"]),
                                         "processed_folder": str(folders["processed"]),
                                         "control_folder": str(folders["control"])}
    for _ in range(3):
        app.send_task("jobmonitor.tasks.add", (1, 2), queue="fsq")
    report = brokers.measure_depths(["fsq", "other"], app)
    assert report.available and report.transport == "filesystem"
    assert report.depths == {"fsq": 3, "other": 0}


def test_a_broker_that_is_down_is_unavailable_not_an_error():
    report = brokers.measure_depths(["default"], DEAD_BROKER)
    assert report.available is False and "Connection refused" in report.error
    assert workers.inspect_now(DEAD_BROKER).available is False


def test_api_stays_up_when_the_broker_is_down(viewer, settings):
    settings.MONITORING = {"CELERY_APP": "tests.read.test_brokers.DEAD_BROKER"}
    api = APIClient()
    api.force_authenticate(viewer)
    data = api.get("/api/v1/metrics/").json()
    assert data["broker"]["available"] is False and data["totals"]["waiting"] is None
    assert all(q["waiting"] is None for q in data["queues"])
    assert data["workers"]["available"] is False and data["workers"]["online"] is None
    queues = api.get("/api/v1/queues/").json()
    assert queues["broker"]["available"] is False
    health = api.get("/api/v1/health/")
    assert health.status_code == 503
    checks = health.json()["checks"]
    assert checks["database"]["status"] == "ok" and checks["broker"]["status"] == "down"
    assert api.get("/metrics").status_code == 200


@pytest.mark.worker
def test_workers_online_and_health_with_a_real_worker(celery_worker, viewer):
    report = workers.workers(refresh=True)
    assert report.available and celery_worker.hostname in report.online
    assert report.consumers("default") == [celery_worker.hostname]
    health = metrics.health()
    assert health["status"] == "healthy", health
    api = APIClient()
    api.force_authenticate(viewer)
    assert api.get("/api/v1/health/").status_code == 200
    queues = {q["name"]: q for q in api.get("/api/v1/queues/").json()["queues"]}
    assert queues["default"]["consumers"] == 1 and "consumed" in queues["other"]["sources"]
    assert api.get("/api/v1/metrics/").json()["workers"]["online"] == 1


def test_no_worker_means_unhealthy(viewer):
    report = workers.workers(refresh=True)
    assert report.available and report.online == []
    api = APIClient()
    api.force_authenticate(viewer)
    response = api.get("/api/v1/health/")
    assert response.status_code == 503 and response.json()["checks"]["workers"]["status"] == "down"
