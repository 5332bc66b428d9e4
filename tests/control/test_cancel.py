"""Cancelling revokes a job that has not started and terminates a running one where the pool allows it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobmonitor.celery import app as celery_app
from monitoring import capture
from monitoring.models import AuditEvent, JobRun, JobState

from ..factories import job_run, wait_until
from .conftest import purge

pytestmark = pytest.mark.worker


def cancel_url(task_id: str) -> str:
    return reverse("monitoring-control:job-cancel", args=[task_id])


def test_cancel_terminates_a_running_task_on_a_prefork_worker(worker_process, api):
    worker = worker_process("ctl-prefork", "ctl-prefork", pool="prefork")
    result = celery_app.send_task("tests.control.nap", args=[60], queue="ctl-prefork")
    running = wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.STARTED)
                         .exclude(worker="").first(), timeout=30)
    assert running.worker == worker.hostname

    response = api.post(cancel_url(result.id), {}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["outcome"] == "terminated"
    revoked = wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.REVOKED).first(),
                         timeout=20)
    assert revoked.exception_message == "Task terminated."
    # Terminated long before the 60 s nap would have ended.
    assert (revoked.finished_at - revoked.started_at).total_seconds() < 30
    assert AuditEvent.objects.get(action="cancel").outcome == "ok"


def test_a_running_task_on_a_threads_worker_is_refused_with_the_reason(worker_process, api):
    worker = worker_process("ctl-threads", "ctl-threads", pool="threads")
    result = celery_app.send_task("tests.control.nap", args=[4], queue="ctl-threads")
    wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.STARTED).exclude(worker="").first(),
               timeout=30)

    response = api.post(cancel_url(result.id), {}, format="json")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"Worker {worker.hostname} runs the 'thread' pool" in detail and "--pool prefork" in detail
    # Nothing was sent: the task runs to its end.
    assert wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.SUCCESS).exists(), timeout=20)
    assert AuditEvent.objects.get(action="cancel").outcome == "rejected"


def test_a_running_task_on_a_busy_solo_worker_is_refused_with_the_reason(celery_worker, api):
    result = celery_app.send_task("tests.control.nap", args=[3], queue="default")
    wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.STARTED).exclude(worker="").first())

    response = api.post(cancel_url(result.id), {}, format="json")

    assert response.status_code == 409
    assert "did not answer" in response.json()["detail"] and "'solo' pool" in response.json()["detail"]
    assert result.get(timeout=15) == 3


def test_a_queued_task_is_revoked_and_never_runs(celery_worker, api):
    # Published to a queue no worker consumes yet, then moved under the worker's eyes.
    result = celery_app.send_task("tests.control.echo", args=[1], queue="ctl-later")
    capture.flush()

    response = api.post(cancel_url(result.id), {}, format="json")

    assert response.status_code == 200
    assert response.json()["outcome"] == "revoked"
    assert JobRun.objects.get(task_id=result.id).state == JobState.REVOKED
    celery_app.control.add_consumer("ctl-later", destination=[celery_worker.hostname], reply=True)
    try:
        wait_until(lambda: not celery_app.connection_for_write().default_channel.client.llen("ctl-later"))
        run = JobRun.objects.get(task_id=result.id)
        assert run.state == JobState.REVOKED and run.result == ""
    finally:
        celery_app.control.cancel_consumer("ctl-later", destination=[celery_worker.hostname], reply=True)
        purge("ctl-later")


@pytest.mark.parametrize("state", [JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED, JobState.LOST])
def test_a_finished_job_cannot_be_cancelled(transactional_db, api, state):
    job = job_run(state=state)

    response = api.post(cancel_url(job.task_id), {}, format="json")

    assert response.status_code == 409
    assert f"already finished ({state})" in response.json()["detail"]
