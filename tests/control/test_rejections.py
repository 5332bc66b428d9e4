"""Bad input gets 404/400/409/403 with a clear reason, and a rejected request changes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring.masking import MASK
from monitoring.models import AuditEvent, JobState, QueueState

from ..factories import job_run
from .conftest import snapshot

FAILED_ID = "failed-job"


@pytest.fixture
def jobs(transactional_db):
    job_run(task_id=FAILED_ID, state=JobState.FAILURE, task_name="tests.control.echo", args=[1], kwargs={},
            queue="emails")
    job_run(task_id="done-job", state=JobState.SUCCESS, queue="emails")
    job_run(task_id="tenant/7/done", state=JobState.SUCCESS, queue="emails")  # a custom id holding "/"
    job_run(task_id="masked-job", state=JobState.FAILURE, kwargs={"api_key": MASK}, queue="emails")
    job_run(task_id="truncated-job", state=JobState.FAILURE, queue="emails", arguments_truncated=True,
            kwargs={"__truncated__": True})
    QueueState.objects.create(name="media", paused=True, paused_at=timezone.now())


def retry(task_id: str = FAILED_ID) -> str:
    return reverse("monitoring-control:job-retry", args=[task_id])


def queue(action: str, name: str) -> str:
    return reverse(f"monitoring-control:queue-{action}", args=[name])


BULK = reverse("monitoring-control:bulk")

REJECTED = [
    # (what, url, body, status, field or words in the message)
    ("unknown job", lambda: retry("nope"), {}, 404, "No job with task id 'nope'"),
    ("unknown job (cancel)", lambda: reverse("monitoring-control:job-cancel", args=["nope"]), {}, 404, "nope"),
    # PostgreSQL text cannot hold NUL, so no job has such an id: a 404, not a failed query.
    ("job id with NUL (retry)", lambda: retry("a\x00b"), {}, 404, "No job with task id"),
    ("job id with NUL (cancel)", lambda: reverse("monitoring-control:job-cancel", args=["a\x00b"]), {}, 404,
     "No job with task id"),
    ("queue name with NUL", lambda: queue("pause", "a\x00b"), {}, 404, "Unknown queue"),
    ("unknown queue (pause)", lambda: queue("pause", "nope"), {}, 404, "Unknown queue 'nope'"),
    ("unknown queue (purge)", lambda: queue("purge", "nope"), {}, 404, "Unknown queue 'nope'"),
    ("unknown queue (clear)", lambda: queue("clear", "nope"), {}, 404, "Unknown queue 'nope'"),
    ("priority too high", retry, {"priority": 10}, 400, "priority"),
    ("priority not a number", retry, {"priority": "high"}, 400, "priority"),
    ("unknown target queue", retry, {"queue": "nowhere"}, 400, "queue"),
    ("negative countdown", retry, {"countdown": -1}, 400, "countdown"),
    ("countdown and eta", retry, {"countdown": 5, "eta": "2099-01-01T00:00:00Z"}, 400, "eta"),
    ("eta not a date", retry, {"eta": "tomorrow"}, 400, "eta"),
    ("eta in the past", retry, {"eta": "2001-01-01T00:00:00Z"}, 400, "eta"),
    ("bad backoff type", retry, {"backoff": {"type": "linear", "delay": 1}}, 400, "backoff.type"),
    ("backoff without delay", retry, {"backoff": {"type": "fixed"}}, 400, "backoff.delay"),
    ("max_retries too high", retry, {"max_retries": 1000}, 400, "max_retries"),
    ("kwargs not an object", retry, {"kwargs": [1, 2]}, 400, "kwargs"),
    ("args not a list", retry, {"args": "1,2"}, 400, "args"),
    ("misspelt override", retry, {"priorty": 3}, 400, "priorty"),
    ("bad idempotency key", retry, {"idempotency_key": "x" * 300}, 400, "idempotency_key"),
    ("success without rerun", lambda: retry("done-job"), {}, 409, "rerun=true"),
    ("masked secret", lambda: retry("masked-job"), {}, 409, "kwargs.api_key"),
    ("truncated arguments", lambda: retry("truncated-job"), {}, 409, "truncated"),
    ("cancel a finished job", lambda: reverse("monitoring-control:job-cancel", args=["done-job"]), {}, 409,
     "already finished"),
    ("cancel a finished job whose id holds '/'",
     lambda: reverse("monitoring-control:job-cancel", args=["tenant/7/done"]), {}, 409, "already finished"),
    ("retry a success whose id holds '/'", lambda: retry("tenant/7/done"), {}, 409, "rerun=true"),
    ("cancel with a bad signal", lambda: reverse("monitoring-control:job-cancel", args=["done-job"]),
     {"signal": "SIGHUP"}, 400, "signal"),
    ("pause a paused queue", lambda: queue("pause", "media"), {}, 409, "already paused"),
    ("resume an active queue", lambda: queue("resume", "emails"), {}, 409, "not paused"),
    ("clear with a bad type", lambda: queue("clear", "emails"), {"type": "old"}, 400, "type"),
    ("clear with a bad date", lambda: queue("clear", "emails"), {"older_than": "last week"}, 400, "older_than"),
    ("bulk with an unknown action", lambda: BULK, {"action": "explode", "ids": [FAILED_ID]}, 400, "action"),
    ("bulk with ids and a filter", lambda: BULK,
     {"action": "retry", "ids": [FAILED_ID], "filter": {"state": "FAILURE"}}, 400, "ids"),
    ("bulk with an unknown id", lambda: BULK, {"action": "retry", "ids": [FAILED_ID, "nope"]}, 404, "nope"),
    ("bulk with an id holding NUL", lambda: BULK, {"action": "retry", "ids": [FAILED_ID, "a\x00b"]}, 400, "ids"),
    ("bulk with a filter holding NUL", lambda: BULK, {"action": "retry", "filter": {"task_name": "a\x00"}}, 400,
     "filter.task_name"),
    ("bulk with a bad filter", lambda: BULK, {"action": "retry", "filter": {"colour": "red"}}, 400, "filter.colour"),
    ("bulk with a bad state", lambda: BULK, {"action": "retry", "filter": {"state": "BROKEN"}}, 400, "filter.state"),
    ("bulk with an empty filter", lambda: BULK, {"action": "retry", "filter": {}}, 400, "filter"),
    ("bulk with bad overrides", lambda: BULK, {"action": "retry", "ids": [FAILED_ID], "parameters": {"priority": 99}},
     400, "priority"),
    ("bulk confirm of an unknown preview", lambda: BULK, {"operation": 999999}, 404, "999999"),
]


@pytest.mark.parametrize(("what", "url", "body", "status", "reason"), REJECTED, ids=[r[0] for r in REJECTED])
def test_a_rejected_request_explains_itself_and_changes_nothing(jobs, api, broker, what, url, body, status, reason):
    before = snapshot(broker)
    audits = AuditEvent.objects.count()

    response = api.post(url(), body, format="json")

    assert response.status_code == status, response.json()
    payload = response.json()
    if status == 400:
        assert payload["field"] == reason, payload
        assert payload["allowed"], payload  # says what would be accepted
        assert reason in payload["errors"]
    else:
        assert reason in payload["detail"]
    assert snapshot(broker) == before
    # Refused actions are audited too (the audit trail is the only change).
    assert AuditEvent.objects.count() == audits + 1
    assert AuditEvent.objects.latest("id").outcome == "rejected"


@pytest.mark.parametrize(("url", "body"), [
    (lambda: retry(), {}),
    (lambda: reverse("monitoring-control:job-cancel", args=[FAILED_ID]), {}),
    (lambda: BULK, {"action": "retry", "ids": [FAILED_ID]}),
    (lambda: queue("pause", "emails"), {}),
    (lambda: queue("resume", "media"), {}),
    (lambda: queue("purge", "emails"), {}),
    (lambda: queue("clear", "emails"), {}),
])
def test_viewers_may_not_act(jobs, viewer_api, broker, url, body):
    before = snapshot(broker)

    response = viewer_api.post(url(), body, format="json")

    assert response.status_code == 403
    assert snapshot(broker) == before


def test_anonymous_users_may_not_act(jobs, client):
    assert client.post(retry(), {}, content_type="application/json").status_code in (401, 403)


def test_audit_trail_is_readable_by_viewers_and_filterable(jobs, api, viewer_api):
    api.post(retry("nope"), {}, format="json")
    api.post(queue("pause", "emails"), format="json")

    listing = viewer_api.get(reverse("monitoring-control:audit-list"), {"outcome": "rejected"})

    assert listing.status_code == 200
    results = listing.json()["results"]
    assert [(e["action"], e["targets"], e["source"]) for e in results] == [("retry", ["nope"], "api")]
    assert viewer_api.post(reverse("monitoring-control:audit-list"), {}).status_code in (403, 405)
