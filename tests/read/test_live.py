"""Live streams over real HTTP: the demo server (WSGI, live_server) and the production server (uvicorn, ASGI)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from monitoring.api.live import hub
from tests.factories import job_run, user, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(settings) -> Iterator[str]:
    settings.MONITORING = {"LIVE_INTERVAL": 0.5, "LIVE_MAX_SECONDS": 30, "LIVE_MAX_STREAMS": 50}
    hub.reset()
    yield Token.objects.create(user=user("superuser")).key
    # A stream notices its client left at its next write; let them end before the tables are flushed.
    wait_until(lambda: hub.open_streams == 0, timeout=15)


def open_stream(base: str, path: str, token: str, last_id: str | None = None) -> http.client.HTTPResponse:
    parts = urlparse(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
    if last_id:
        headers["Last-Event-ID"] = last_id
    conn.request("GET", path, headers=headers)
    return conn.getresponse()


def read_events(response: http.client.HTTPResponse, count: int) -> list[dict]:
    """Read ``count`` SSE events (id, event, data) from an open response."""
    events, current = [], {}
    while len(events) < count:
        raw = response.readline()
        assert raw, f"stream ended early (HTTP {response.status}) after {len(events)} events"
        line = raw.decode().rstrip("\n")
        if line == "":
            if "data" in current:
                events.append(current)
            current = {}
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    response.close()
    return events


def test_stream_cap_answers_503(live_server, token, settings):
    # First in this module: streams of clients that went away in other tests end only at their next write.
    wait_until(lambda: hub.open_streams == 0, timeout=10)
    settings.MONITORING = {**settings.MONITORING, "LIVE_MAX_STREAMS": 1}
    first = open_stream(live_server.url, "/api/v1/live/", token)
    assert first.status == 200
    try:
        second = open_stream(live_server.url, "/api/v1/live/", token)
        assert second.status == 503 and second.getheader("Retry-After")
        assert "LIVE_MAX_STREAMS" in json.loads(second.read())["detail"]
    finally:
        first.close()


def test_wsgi_stream_pushes_metrics_each_interval(live_server, token):
    job_run(queue="default")
    response = open_stream(live_server.url, "/api/v1/live/", token)
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    events = read_events(response, 3)
    ids = [int(event["id"]) for event in events]
    # Each event is a newer snapshot (no repeats). On a loaded machine the reader may miss an interval, so
    # the ids need not be consecutive.
    assert ids == sorted(set(ids))
    data = json.loads(events[0]["data"])
    assert events[0]["event"] == "metrics" and {"queues", "totals", "success_rate"} <= set(data)


def test_streams_share_one_snapshot_per_interval(live_server, token):
    seen: list[int] = []

    def listen():
        seen.extend(int(e["id"]) for e in read_events(open_stream(live_server.url, "/api/v1/live/", token), 2))

    threads = [threading.Thread(target=listen) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(seen) == 8
    # Four streams, but each interval's snapshot was computed once.
    assert hub.computations["metrics"] <= len(set(seen)) + 1 < len(seen)


def test_reconnect_with_last_event_id_resumes_after_it(live_server, token):
    first = read_events(open_stream(live_server.url, "/api/v1/live/", token), 1)[0]
    resumed = read_events(open_stream(live_server.url, "/api/v1/live/", token, last_id=first["id"]), 1)[0]
    assert int(resumed["id"]) > int(first["id"])


def test_queue_stream_shows_its_active_jobs(live_server, token):
    job = job_run(queue="reports", state="STARTED")
    event = read_events(open_stream(live_server.url, "/api/v1/queues/reports/live/", token), 1)[0]
    data = json.loads(event["data"])
    assert event["event"] == "queue" and data["queue"] == "reports"
    assert [j["task_id"] for j in data["active_jobs"]] == [job.task_id]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_asgi_stream_under_uvicorn(token):
    port = _free_port()
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(Path.cwd()),
           "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "jobmonitor.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, server.stdout.read().decode()
                time.sleep(0.2)
        response = open_stream(f"http://127.0.0.1:{port}", "/api/v1/live/", token)
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        events = read_events(response, 2)  # the default interval is 2 s
        assert int(events[1]["id"]) > int(events[0]["id"])
        assert "queues" in json.loads(events[1]["data"])
        # Anonymous streams are refused under ASGI too.
        anonymous = open_stream(f"http://127.0.0.1:{port}", "/api/v1/live/", "bad-token")
        assert anonymous.status in (401, 403)
    finally:
        server.terminate()
        server.wait(10)
