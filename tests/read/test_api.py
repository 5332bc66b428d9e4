"""The read API: who may read, every filter, bad input answered with 400/404 naming the problem."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from monitoring.models import JobRun, JobState, QueueState
from tests.factories import job_run, user

pytestmark = pytest.mark.django_db

READ_ENDPOINTS = ["job-list", "metrics", "trends", "stats", "timeline", "overlaps", "stuck", "errors", "queue-list",
                  "health"]


@pytest.fixture
def client(viewer) -> APIClient:
    api = APIClient()
    api.force_authenticate(viewer)
    return api


def url(route: str, **kwargs: str) -> str:
    return reverse(f"monitoring-api:{route}", kwargs=kwargs or None)


@pytest.mark.parametrize("name", READ_ENDPOINTS)
def test_anonymous_and_role_less_users_are_refused(name):
    assert APIClient().get(url(name)).status_code in (401, 403)
    api = APIClient()
    api.force_authenticate(user())  # staff, but in no monitoring group
    assert api.get(url(name)).status_code == 403


@pytest.mark.parametrize("name", READ_ENDPOINTS)
def test_viewers_read_every_endpoint(client, name):
    response = client.get(url(name))
    assert response.status_code in (200, 503) if name == "health" else response.status_code == 200


def test_token_and_session_authentication(viewer):
    token = Token.objects.create(user=viewer)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get(url("metrics")).status_code == 200
    session = APIClient()
    session.login(username=viewer.username, password="pw")
    assert session.get(url("metrics")).status_code == 200
    assert session.get("/metrics").status_code == 200


def test_jobs_list_filters():
    now = timezone.now()
    a = job_run(task_name="app.mail", queue="emails", worker="w1", state=JobState.FAILURE,
                exception_type="DeliveryError", exception_message="relay busy", kwargs={"to": "ann@example.com"},
                created_at=now - timedelta(minutes=5))
    b = job_run(task_name="app.report", queue="reports", worker="w2", created_at=now - timedelta(hours=3))
    c = job_run(task_name="app.report", queue="reports", worker="w2", state=JobState.STARTED,
                created_at=now - timedelta(days=3))
    api = APIClient()
    api.force_authenticate(user("viewer"))

    def ids(**params):
        response = api.get(url("job-list"), params)
        assert response.status_code == 200, response.json()
        return [row["task_id"] for row in response.json()["results"]]

    assert ids() == [a.task_id, b.task_id, c.task_id]
    assert ids(state="FAILURE") == [a.task_id]
    assert ids(state=["FAILURE", "STARTED"]) == [a.task_id, c.task_id]
    assert ids(task_name="app.report") == [b.task_id, c.task_id]
    assert ids(queue="emails") == [a.task_id]
    assert ids(worker="w2") == [b.task_id, c.task_id]
    assert ids(exception_type="DeliveryError") == [a.task_id]
    assert ids(range="1h") == [a.task_id]
    assert ids(range="24h") == [a.task_id, b.task_id]
    assert ids(since=(now - timedelta(hours=4)).isoformat(), until=(now - timedelta(hours=1)).isoformat()) == [
        b.task_id]
    for term in ("ann@example", "relay", "MAIL", a.task_id):
        assert ids(search=term) == [a.task_id]
    assert ids(ordering="created_at") == [c.task_id, b.task_id, a.task_id]
    row = api.get(url("job-list")).json()["results"][0]
    assert row["url"].endswith(url("job-detail", task_id=a.task_id))


def test_jobs_list_links_and_timestamps_match_drf_and_reverse(client):
    # The list builds row links from one reverse() per page and looks the time zone up once: every row must
    # still read exactly as reverse() and DRF's DateTimeField would write it, whatever the task id holds.
    from rest_framework.fields import DateTimeField

    ids = ["plain-id", "with space", "ümlaut", "a?b#c", "50%off", "semi;colon", "at@sign:colon", "~tilde",
           "tenant/42/export", "trailing/"]
    now = timezone.now()
    for i, task_id in enumerate(ids):
        job_run(task_id=task_id, created_at=now - timedelta(seconds=i), started_at=now, finished_at=now)
    rows = {row["task_id"]: row for row in client.get(url("job-list"), {"limit": 100}).json()["results"]}
    assert set(rows) == set(ids)
    drf = DateTimeField()
    for task_id in ids:
        job = JobRun.objects.get(task_id=task_id)
        assert rows[task_id]["url"] == "http://testserver" + url("job-detail", task_id=task_id)
        for name in ("created_at", "started_at", "finished_at"):
            assert rows[task_id][name] == drf.to_representation(getattr(job, name))
        assert rows[task_id]["eta"] is None
        assert client.get(rows[task_id]["url"]).status_code == 200


def test_jobs_list_pages_and_cursor_walk(client, django_assert_max_num_queries):
    now = timezone.now()
    jobs = [job_run(created_at=now - timedelta(seconds=i)) for i in range(7)]
    page = client.get(url("job-list"), {"limit": 3, "page": 2}).json()
    assert page["count"] == 7 and page["count_capped"] is False
    assert [r["task_id"] for r in page["results"]] == [j.task_id for j in jobs[3:6]]
    assert page["next"] and page["previous"]

    seen, next_url = [], url("job-list") + "?limit=3&cursor="
    while next_url:
        with django_assert_max_num_queries(3):  # permissions (2) and one keyset page of rows
            data = client.get(next_url).json()
        seen += [r["task_id"] for r in data["results"]]
        next_url = data["next"]
    assert seen == [j.task_id for j in jobs]


def test_jobs_list_query_count_is_constant(client, django_assert_max_num_queries):
    for _ in range(3):
        job_run()
    with django_assert_max_num_queries(4) as few:  # permissions (2), rows, bounded count
        client.get(url("job-list"))
    for _ in range(30):
        job_run()
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url("job-list"))


def test_job_detail_and_unknown_ids(client):
    job = job_run(state=JobState.FAILURE, traceback="Traceback ...")
    data = client.get(url("job-detail", task_id=job.task_id)).json()
    assert data["task_id"] == job.task_id and data["traceback"] == "Traceback ..."
    assert [t["state"] for t in data["transitions"]][-1] == "FAILURE"
    missing = client.get(url("job-detail", task_id="no-such-task"))
    assert missing.status_code == 404 and "no-such-task" in missing.json()["task_id"]
    # No stored id can hold NUL (PostgreSQL text cannot): a 404, not a failed query.
    nul = client.get(url("job-detail", task_id="a\x00b"))
    assert nul.status_code == 404 and "No job with task id" in nul.json()["task_id"]


def test_unknown_queue_is_404_and_a_known_one_shows_its_active_jobs(client):
    job_run(queue="reports", state=JobState.STARTED)
    data = client.get(url("queue-detail", name="reports")).json()
    assert data["queue"] == "reports" and data["active"] == 1 and len(data["active_jobs"]) == 1
    assert client.get(url("queue-detail", name="nope")).status_code == 404
    assert client.get(url("queue-live", name="nope")).status_code == 404
    assert client.get(url("queue-detail", name="a\x00b")).status_code == 404
    assert client.get(url("queue-live", name="a\x00b")).status_code == 404


def test_queue_list_shows_every_known_queue_with_paused_flag(client):
    job_run(queue="seen-only")
    QueueState.objects.create(name="emails", paused=True)
    data = client.get(url("queue-list")).json()
    queues = {q["name"]: q for q in data["queues"]}
    assert {"default", "emails", "reports", "media", "seen-only"} <= set(queues)
    assert queues["emails"]["paused"] is True and queues["default"]["paused"] is False
    assert "records" in queues["seen-only"]["sources"] and "configured" in queues["default"]["sources"]
    assert queues["default"]["depth"] == 0


BAD_PARAMS = [
    ("job-list", {"state": "DONE"}, "state", "SUCCESS"),
    ("job-list", {"range": "2h"}, "range", "24h"),
    ("job-list", {"since": "yesterday"}, "since", "ISO 8601"),
    ("job-list", {"ordering": "runtime"}, "ordering", "-created_at"),
    ("job-list", {"limit": "500"}, "limit", "100"),
    ("job-list", {"limit": "x"}, "limit", "between 1 and 100"),
    ("job-list", {"page": "0"}, "page", "at least 1"),
    ("job-list", {"page": "1000"}, "page", "cursor"),
    ("job-list", {"cursor": "garbage!"}, "cursor", "previous response"),
    ("job-list", {"cursor": "", "ordering": "started_at"}, "cursor", "created_at"),
    ("trends", {"period": "1y"}, "period", "30d"),
    ("stats", {"range": "90d"}, "range", "1h, 6h, 24h, 7d, 30d"),
    ("stats", {"range": "1h", "since": "2026-01-01T00:00:00Z"}, "range", "not both"),
    ("stats", {"since": "2030-01-01T00:00:00Z"}, "until", "later than since"),
    ("timeline", {"until": "32/13/2026"}, "until", "ISO 8601"),
    ("overlaps", {"range": "-1"}, "range", "Allowed values"),
    ("stuck", {"threshold": "ten"}, "threshold", "seconds"),
    ("stuck", {"threshold": "0"}, "threshold", "greater than or equal to 1"),
    ("errors", {"range": "forever"}, "range", "Allowed values"),
    ("errors", {"limit": "0"}, "limit", "between 1 and 100"),
]


@pytest.mark.parametrize("name, params, field, hint", BAD_PARAMS)
def test_bad_query_parameters_are_400_naming_the_parameter(client, name, params, field, hint):
    response = client.get(url(name), params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert hint in " ".join(body[field]), body


def test_stuck_endpoint_lists_longest_first(client):
    now = timezone.now()
    old = job_run(state=JobState.STARTED, created_at=now - timedelta(hours=3))
    job_run(state=JobState.STARTED, created_at=now - timedelta(minutes=15))
    job_run(state=JobState.STARTED, created_at=now - timedelta(minutes=2))
    data = client.get(url("stuck")).json()
    assert data["count"] == 2
    assert data["results"][0]["task_id"] == old.task_id and data["results"][0]["severity"] == "critical"
    assert client.get(url("stuck"), {"threshold": 60}).json()["count"] == 3


def test_prometheus_exposition(client, viewer):
    from monitoring import rollups

    now = timezone.now()
    for runtime in (0.2, 0.7, 3.0):
        job_run(task_name="app.mail", queue="emails", runtime=runtime, created_at=now - timedelta(hours=2))
    job_run(task_name="app.mail", queue="emails", state=JobState.FAILURE, created_at=now - timedelta(hours=2))
    rollups.rebuild(now - timedelta(days=1), now)
    body = client.get("/metrics").content.decode()
    assert 'jobmonitor_jobs_finished_total{outcome="succeeded",queue="emails",task_name="app.mail"} 3.0' in body
    assert 'jobmonitor_jobs_finished_total{outcome="failed",queue="emails",task_name="app.mail"} 1.0' in body
    assert 'jobmonitor_job_runtime_seconds_bucket{le="0.25",queue="emails",task_name="app.mail"} 1.0' in body
    assert 'jobmonitor_job_runtime_seconds_bucket{le="1",queue="emails",task_name="app.mail"} 3.0' in body
    assert 'jobmonitor_job_runtime_seconds_count{queue="emails",task_name="app.mail"} 4.0' in body
    assert 'jobmonitor_queue_depth{queue="default"} 0.0' in body
    assert "jobmonitor_broker_up 1.0" in body
    assert APIClient().get("/metrics").status_code in (401, 403)


def test_prometheus_task_labels_are_bounded(client, settings):
    settings.MONITORING = {"PROMETHEUS_MAX_TASK_NAMES": 2}
    for i in range(4):
        for _ in range(i + 1):
            job_run(task_name=f"app.t{i}", queue="default", created_at=timezone.now() - timedelta(minutes=5))
    response = client.get("/metrics")
    body = response.content.decode()
    assert response.status_code == 200, body
    names = {line.split('task_name="')[1].split('"')[0] for line in body.splitlines()
             if line.startswith("jobmonitor_jobs_finished_total{")}
    assert names == {"app.t3", "app.t2", "other"}


def test_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/jobs/", "/api/v1/metrics/", "/api/v1/trends/", "/api/v1/live/", "/metrics"):
        assert path in paths
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()


def test_job_list_rows_never_leak_between_queries():
    assert JobRun.objects.count() == 0
