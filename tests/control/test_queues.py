"""Pause and resume a queue (surviving worker restarts), purge one queue's messages, clear its records."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobmonitor.celery import app as celery_app
from monitoring import capture
from monitoring.models import AuditEvent, JobRun, JobState, QueueState

from ..factories import job_run, wait_until
from .conftest import purge, queue_length


def url(action: str, name: str) -> str:
    return reverse(f"monitoring-control:queue-{action}", args=[name])


def consumed_by(worker) -> list[str]:
    replies = celery_app.control.inspect(destination=[worker.hostname], timeout=2).active_queues() or {}
    return [q["name"] for q in replies.get(worker.hostname, [])]


@pytest.mark.worker
def test_pause_keeps_messages_queued_across_a_worker_restart_and_resume_drains_them(worker_process, api, broker,
                                                                                   settings):
    queue = "ctl-pause"
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": [queue]}
    purge(queue)
    worker = worker_process("ctl-pauser", f"{queue},ctl-pause-other", pool="solo")

    paused = api.post(url("pause", queue))
    assert paused.status_code == 200, paused.json()
    assert paused.json()["workers"] == [worker.hostname]
    state = QueueState.objects.get(name=queue)
    assert state.paused and state.paused_workers == [worker.hostname]
    assert wait_until(lambda: queue not in consumed_by(worker))

    waiting = [celery_app.send_task("tests.control.echo", args=[i], queue=queue) for i in range(3)]
    time.sleep(2)  # the worker would have taken them by now
    capture.flush()
    assert queue_length(broker, queue) == 3
    assert set(JobRun.objects.filter(task_id__in=[r.id for r in waiting]).values_list("state", flat=True)) == {
        JobState.PENDING}

    worker.stop()
    worker.start()
    assert queue not in consumed_by(worker)
    assert "ctl-pause-other" in consumed_by(worker)  # only the paused queue is left out
    time.sleep(2)
    assert queue_length(broker, queue) == 3

    resumed = api.post(url("resume", queue))
    assert resumed.status_code == 200, resumed.json()
    assert resumed.json()["workers"] == [worker.hostname]
    wait_until(lambda: JobRun.objects.filter(task_id__in=[r.id for r in waiting], state=JobState.SUCCESS).count()
               == 3, timeout=30)
    assert queue_length(broker, queue) == 0
    assert not QueueState.objects.get(name=queue).paused
    assert list(AuditEvent.objects.order_by("id").values_list("action", "outcome")) == [
        ("pause_queue", "ok"), ("resume_queue", "ok")]


@pytest.mark.worker
def test_a_worker_started_while_a_queue_is_paused_does_not_consume_it(worker_process, api, broker, settings):
    queue = "ctl-paused-early"
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": [queue]}
    purge(queue)
    assert api.post(url("pause", queue)).json()["workers"] == []  # nobody consumed it yet
    result = celery_app.send_task("tests.control.echo", args=[1], queue=queue)

    worker = worker_process("ctl-late", queue, pool="solo")  # its only queue is paused
    time.sleep(2)
    assert queue_length(broker, queue) == 1
    assert QueueState.objects.get(name=queue).paused_workers == [worker.hostname]

    api.post(url("resume", queue))
    assert wait_until(lambda: JobRun.objects.filter(task_id=result.id, state=JobState.SUCCESS).exists(), timeout=30)


def test_pausing_a_paused_queue_or_resuming_an_active_one_is_a_conflict(transactional_db, api):
    QueueState.objects.create(name="emails", paused=True, paused_at=timezone.now())

    again = api.post(url("pause", "emails"))
    assert again.status_code == 409 and "already paused" in again.json()["detail"]
    active = api.post(url("resume", "reports"))
    assert active.status_code == 409 and "is not paused" in active.json()["detail"]


def test_purge_removes_only_that_queues_messages(transactional_db, api, broker):
    purge("reports", "media")
    doomed = [celery_app.send_task("tests.control.echo", args=[i], queue="reports", priority=p)
              for i, p in enumerate((0, 5, 9))]  # priorities land in Redis sub-queues
    kept = [celery_app.send_task("tests.control.echo", args=[i], queue="media") for i in range(2)]
    capture.flush()
    assert queue_length(broker, "reports") == 3 and broker.llen("reports") == 1

    response = api.post(url("purge", "reports"))

    assert response.status_code == 200, response.json()
    assert response.json()["purged"] == 3
    assert response.json()["records_revoked"] == 3
    assert queue_length(broker, "reports") == 0
    assert queue_length(broker, "media") == 2
    assert set(JobRun.objects.filter(task_id__in=[r.id for r in doomed]).values_list("state", flat=True)) == {
        JobState.REVOKED}
    assert set(JobRun.objects.filter(task_id__in=[r.id for r in kept]).values_list("state", flat=True)) == {
        JobState.PENDING}
    purge("media")


def make_finished(queue: str, state: str, days_ago: int) -> JobRun:
    return job_run(queue=queue, state=state, created_at=timezone.now() - timedelta(days=days_ago, hours=1))


@pytest.mark.parametrize(("kind", "cleared_states"), [
    ("completed", {JobState.SUCCESS}),
    ("failed", {JobState.FAILURE, JobState.LOST}),
    ("all", {JobState.SUCCESS, JobState.FAILURE, JobState.LOST, JobState.REVOKED}),
])
def test_clear_deletes_finished_records_of_one_queue_by_outcome(transactional_db, api, settings, kind,
                                                                cleared_states):
    settings.MONITORING = {**settings.MONITORING, "CLEAR_BATCH_SIZE": 2}  # several batches
    rows = [make_finished(q, s, d) for q in ("emails", "media")
            for s in (JobState.SUCCESS, JobState.FAILURE, JobState.LOST, JobState.REVOKED) for d in (1, 5, 9)]
    running = job_run(queue="emails", state=JobState.STARTED)
    expected_gone = {r.pk for r in rows if r.queue == "emails" and r.state in cleared_states}

    response = api.post(url("clear", "emails") + f"?type={kind}")

    assert response.status_code == 200, response.json()
    assert response.json()["deleted"] == len(expected_gone)
    remaining = set(JobRun.objects.values_list("pk", flat=True))
    assert remaining == {r.pk for r in rows} - expected_gone | {running.pk}


def test_clear_older_than_keeps_recent_records(transactional_db, api):
    rows = [make_finished("emails", JobState.FAILURE, d) for d in (1, 5, 9)]
    cutoff = (timezone.now() - timedelta(days=3)).isoformat()

    response = api.post(url("clear", "emails"), {"type": "failed", "older_than": cutoff}, format="json")

    assert response.json()["deleted"] == 2
    assert list(JobRun.objects.values_list("pk", flat=True)) == [rows[0].pk]


def test_clear_dry_run_counts_without_deleting(transactional_db, api):
    for d in (1, 2):
        make_finished("emails", JobState.SUCCESS, d)

    response = api.post(url("clear", "emails") + "?type=completed&dry_run=true")

    assert response.json()["deleted"] == 2 and response.json()["dry_run"] is True
    assert JobRun.objects.count() == 2
