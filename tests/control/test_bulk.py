"""Bulk actions: a preview freezes and counts the selection; only those jobs are acted on, in the background
when there are many."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import capture
from monitoring.models import AuditEvent, BulkOperation, JobRun, JobState

from ..factories import job_run, wait_until
from .conftest import purge, queue_length

IDLE = "ctl-bulk-idle"
BULK = reverse("monitoring-control:bulk")


@pytest.fixture(autouse=True)
def idle_queue():
    purge(IDLE)
    yield
    purge(IDLE)


def failed(n: int, **fields) -> list[JobRun]:
    defaults = {"state": JobState.FAILURE, "task_name": "tests.control.echo", "args": [], "kwargs": {}, "queue": IDLE,
                "exception_type": "DeliveryError"}
    return [job_run(**{**defaults, **fields}) for _ in range(n)]


def test_preview_counts_the_selection_and_only_those_jobs_are_retried(transactional_db, api, broker):
    matching = failed(3)
    failed(2, exception_type="ReportTimeout")
    job_run(state=JobState.SUCCESS, queue=IDLE, exception_type="DeliveryError")
    expected = sum(1 for j in JobRun.objects.all() if j.exception_type == "DeliveryError")  # 4, one SUCCESS

    preview = api.post(BULK, {"action": "retry", "filter": {"exception_type": "DeliveryError"}, "preview": True},
                       format="json")

    assert preview.status_code == 200, preview.json()
    body = preview.json()
    assert (body["status"], body["count"], body["eligible"]) == ("preview", expected, 3)
    assert queue_length(broker, IDLE) == 0  # a preview sends nothing

    late = failed(1)[0]  # matches the filter, but after the preview
    late.exception_type = "DeliveryError"
    late.save()
    done = api.post(BULK, {"operation": body["id"]}, format="json")

    assert done.status_code == 200, done.json()
    result = done.json()
    assert (result["status"], result["processed"], result["succeeded"], result["skipped"]) == ("done", 4, 3, 1)
    assert "succeeded; pass rerun=true" in result["problems"][0]["reason"]
    assert queue_length(broker, IDLE) == 3
    capture.flush()
    assert set(JobRun.objects.exclude(retry_of="").values_list("retry_of", flat=True)) == {
        j.task_id for j in matching}
    event = AuditEvent.objects.get(action="bulk_retry")
    assert event.outcome == "partial" and len(event.new_task_ids) == 3


def test_a_preview_is_acted_on_once(transactional_db, api, broker):
    failed(2)
    preview = api.post(BULK, {"action": "retry", "filter": {"queue": IDLE}, "preview": True}, format="json").json()

    assert api.post(BULK, {"operation": preview["id"]}, format="json").status_code == 200
    again = api.post(BULK, {"operation": preview["id"]}, format="json")

    assert again.status_code == 409 and "already done" in again.json()["detail"]
    assert queue_length(broker, IDLE) == 2


def test_a_stale_preview_must_be_repeated(transactional_db, api, broker):
    failed(1)
    preview = api.post(BULK, {"action": "retry", "filter": {"queue": IDLE}, "preview": True}, format="json").json()
    BulkOperation.objects.filter(pk=preview["id"]).update(created_at=timezone.now() - timedelta(hours=1))

    stale = api.post(BULK, {"operation": preview["id"]}, format="json")

    assert stale.status_code == 409 and "preview again" in stale.json()["detail"]
    assert queue_length(broker, IDLE) == 0


def test_bulk_cancel_by_ids_revokes_waiting_jobs(transactional_db, api):
    waiting = [job_run(state=JobState.PENDING, queue=IDLE) for _ in range(3)]
    finished = job_run(state=JobState.SUCCESS, queue=IDLE)

    response = api.post(BULK, {"action": "cancel", "ids": [j.task_id for j in [*waiting, finished]]}, format="json")

    assert response.json()["succeeded"] == 3 and response.json()["skipped"] == 1
    assert set(JobRun.objects.filter(pk__in=[j.pk for j in waiting]).values_list("state", flat=True)) == {
        JobState.REVOKED}


@pytest.mark.worker
def test_a_large_selection_runs_in_the_background_with_progress(celery_worker, api, broker, settings):
    settings.MONITORING = {**settings.MONITORING, "BULK_SYNC_LIMIT": 2, "BULK_BATCH_SIZE": 2}
    jobs = failed(5)

    started = api.post(BULK, {"action": "retry", "ids": [j.task_id for j in jobs], "parameters": {"priority": 4}},
                       format="json")

    assert started.status_code == 202, started.json()
    assert started.json()["status"] == "queued"
    progress_url = started.json()["url"]

    def finished() -> dict | None:
        body = api.get(progress_url).json()
        return body if body["status"] == "done" else None

    body = wait_until(finished, timeout=30, interval=0.2)
    assert (body["total"], body["processed"], body["succeeded"], body["progress"]) == (5, 5, 5, 1.0)
    assert len(set(body["new_task_ids"])) == 5
    assert queue_length(broker, IDLE) == 5
    capture.flush()
    assert set(JobRun.objects.filter(task_id__in=body["new_task_ids"]).values_list("priority", flat=True)) == {4}
    assert list(AuditEvent.objects.filter(action="bulk_retry").order_by("id").values_list("outcome", flat=True)) == [
        "started", "ok"]
