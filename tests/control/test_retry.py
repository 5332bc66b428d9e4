"""Retrying a job sends its task again, with the operator's changes, exactly once per request."""

from __future__ import annotations

import threading

import pytest
from celery.result import AsyncResult
from django.db import connection
from django.urls import reverse

from monitoring import capture
from monitoring.control import operator_retry_policy
from monitoring.masking import MASK
from monitoring.models import AuditEvent, JobRun, JobState

from ..factories import job_run, wait_until
from .conftest import purge, queue_length

IDLE = "ctl-idle"  # no worker consumes it: messages sent there can be counted


@pytest.fixture(autouse=True)
def known_queues(settings):
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": ["other", IDLE]}
    purge(IDLE)
    yield
    purge(IDLE)


def retry_url(task_id: str) -> str:
    return reverse("monitoring-control:job-retry", args=[task_id])


@pytest.mark.worker
def test_retry_runs_a_new_execution_with_the_overrides_the_worker_sees(celery_worker, api):
    original = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[1],
                       kwargs={"a": 1, "b": 2}, queue="default", priority=0)

    response = api.post(retry_url(original.task_id),
                        {"priority": 7, "queue": "other", "kwargs": {"b": 3, "c": 4}}, format="json")

    assert response.status_code == 201, response.json()
    new_id = response.json()["new_task_id"]
    assert response.json()["message"] == f"Job retried with ID {new_id}"
    seen = AsyncResult(new_id).get(timeout=20)
    assert seen["queue"] == "other"
    assert seen["priority"] == 7
    assert seen["args"] == [1]
    assert seen["kwargs"] == {"a": 1, "b": 3, "c": 4}  # stored kwargs with the overrides merged in
    assert seen["headers"]["jobmonitor_retry_of"] == original.task_id

    new = wait_until(lambda: JobRun.objects.filter(task_id=new_id, state=JobState.SUCCESS).first())
    assert new.retry_of == original.task_id
    assert (new.queue, new.priority) == ("other", 7)
    assert JobRun.objects.filter(task_id=original.task_id, state=JobState.FAILURE).exists()  # kept by default

    event = AuditEvent.objects.get(action="retry")
    assert (event.source, event.outcome, event.client_address) == ("api", "ok", "127.0.0.1")
    assert event.actor_name == response.wsgi_request.user.username
    assert event.targets == [original.task_id] and event.new_task_ids == [new_id]
    assert event.parameters == {"priority": 7, "queue": "other", "kwargs": {"b": 3, "c": 4}}


@pytest.mark.worker
def test_max_retries_and_backoff_overrides_are_honoured_by_policy_tasks(celery_worker, api):
    original = job_run(state=JobState.FAILURE, task_name="tests.control.always_retries", args=[], kwargs={},
                       queue="default")

    response = api.post(retry_url(original.task_id),
                        {"max_retries": 2, "backoff": {"type": "fixed", "delay": 0}}, format="json")

    assert response.status_code == 201, response.json()
    new = wait_until(lambda: JobRun.objects.filter(task_id=response.json()["new_task_id"],
                                                   state=JobState.FAILURE).first(), timeout=30)
    # The task's own max_retries is 0: two retries happened only because the operator asked for them.
    assert new.retries == 2
    assert new.exception_type == "ConnectionError" and new.exception_message == "attempt 3 failed"


@pytest.mark.parametrize(("backoff", "retries", "expected"), [
    ({"type": "fixed", "delay": 5}, 0, 5.0),
    ({"type": "fixed", "delay": 5}, 3, 5.0),
    ({"type": "exponential", "delay": 5}, 0, 5.0),
    ({"type": "exponential", "delay": 5}, 3, 40.0),
    ({"type": "exponential", "delay": 5, "max_delay": 30}, 3, 30.0),
])
def test_backoff_policy_delays(backoff, retries, expected):
    request = type("Request", (), {"headers": {"jobmonitor_backoff": backoff, "jobmonitor_max_retries": 4},
                                   "retries": retries})()
    assert operator_retry_policy(request) == (4, expected)


def test_remove_original_replaces_the_record(transactional_db, api):
    original = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    response = api.post(retry_url(original.task_id), {"remove_original": True}, format="json")

    assert response.status_code == 201, response.json()
    assert not JobRun.objects.filter(task_id=original.task_id).exists()
    capture.flush()
    assert JobRun.objects.get(task_id=response.json()["new_task_id"]).retry_of == original.task_id


def test_a_successful_job_is_rerun_only_when_asked(transactional_db, api, broker):
    done = job_run(state=JobState.SUCCESS, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    refused = api.post(retry_url(done.task_id), {}, format="json")
    assert refused.status_code == 409
    assert "rerun=true" in refused.json()["detail"]
    assert queue_length(broker, IDLE) == 0

    rerun = api.post(retry_url(done.task_id), {"rerun": True}, format="json")
    assert rerun.status_code == 201
    assert queue_length(broker, IDLE) == 1


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.RECEIVED, JobState.STARTED, JobState.RETRY])
def test_an_unfinished_job_cannot_be_retried(transactional_db, api, broker, state):
    job = job_run(state=state, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    response = api.post(retry_url(job.task_id), {}, format="json")

    assert response.status_code == 409
    assert f"is {state}" in response.json()["detail"]
    assert queue_length(broker, IDLE) == 0


def test_masked_secrets_must_be_given_again(transactional_db, api, broker):
    job = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=["to@example.com"],
                  kwargs={"smtp_password": MASK}, queue=IDLE)

    refused = api.post(retry_url(job.task_id), {}, format="json")
    assert refused.status_code == 409
    assert "kwargs.smtp_password" in refused.json()["detail"]

    accepted = api.post(retry_url(job.task_id), {"kwargs": {"smtp_password": "real"}}, format="json")
    assert accepted.status_code == 201
    assert queue_length(broker, IDLE) == 1


def sent_retries(original: JobRun) -> int:
    capture.flush()
    return JobRun.objects.filter(retry_of=original.task_id).count()


def test_the_same_idempotency_key_creates_one_task(transactional_db, api, broker):
    job = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    first = api.post(retry_url(job.task_id), {"priority": 3}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = api.post(retry_url(job.task_id), {"priority": 3, "idempotency_key": "k-1"}, format="json")

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["new_task_id"] == first.json()["new_task_id"]
    assert second.json()["duplicate"] is True
    assert queue_length(broker, IDLE) == 1
    assert sent_retries(job) == 1
    assert list(AuditEvent.objects.order_by("id").values_list("outcome", flat=True)) == ["ok", "duplicate"]


def test_a_key_reused_for_a_different_request_is_refused(transactional_db, api, broker):
    job = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)
    api.post(retry_url(job.task_id), {"priority": 3}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    reused = api.post(retry_url(job.task_id), {"priority": 5}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")

    assert reused.status_code == 409
    assert "different request" in reused.json()["detail"]
    assert queue_length(broker, IDLE) == 1


def test_a_double_click_without_a_key_creates_one_task(transactional_db, api, broker):
    job = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    first = api.post(retry_url(job.task_id), {}, format="json")
    second = api.post(retry_url(job.task_id), {}, format="json")

    assert second.json()["new_task_id"] == first.json()["new_task_id"]
    assert queue_length(broker, IDLE) == 1


def test_concurrent_submissions_with_one_key_create_one_task(transactional_db, operator, broker):
    from rest_framework.test import APIClient

    job = job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        client = APIClient()
        client.force_authenticate(operator)
        barrier.wait()
        try:
            response = client.post(retry_url(job.task_id), {}, format="json", HTTP_IDEMPOTENCY_KEY="same")
            results.append(response.json()["new_task_id"])
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 4 and len(set(results)) == 1
    assert queue_length(broker, IDLE) == 1
    assert sent_retries(job) == 1
