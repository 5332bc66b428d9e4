"""The batches API: lists with filters, the monitoring report, retry and cancel for operators only."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from batches import pipeline
from batches.models import AIProcessingRequest, BatchJob, BatchStatus, RequestStatus
from monitoring.models import AuditEvent

from ..factories import wait_until
from .helpers import company, submit

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def finished_batch(texts: list[str]) -> BatchJob:
    submit(company(), texts)
    pipeline.create_batches()
    wait_until(lambda: pipeline.check_batches() and not BatchJob.objects.in_flight().exists())
    pipeline.process_results()
    return BatchJob.objects.latest("id")


def test_lists_filter_and_order(standin, viewer):
    finished_batch([f"r{i}" for i in range(10)])
    other = company(name="Other")
    submit(other, ["waiting"], job_type="summary")
    api = client_for(viewer)

    batches = api.get("/api/v1/batches/", {"status": "completed"}).json()
    assert batches["count"] == 1 and batches["results"][0]["request_count"] == 10
    assert api.get("/api/v1/batches/", {"status": "failed"}).json()["count"] == 0
    requests = api.get("/api/v1/requests/", {"company": other.pk}).json()
    assert requests["count"] == 1 and requests["results"][0]["status"] == "pending_batching"
    assert api.get("/api/v1/requests/", {"job_type": "sentiment", "status": "completed"}).json()["count"] == 10
    ordered = api.get("/api/v1/requests/", {"ordering": "requested_at", "limit": 3}).json()
    assert len(ordered["results"]) == 3
    stamps = [r["requested_at"] for r in ordered["results"]]
    assert stamps == sorted(stamps)
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/batches/", {"created_after": future}).json()["count"] == 0


@pytest.mark.parametrize(("url", "params", "name", "hint"), [
    ("/api/v1/batches/", {"status": "done"}, "status", "in_progress"),
    ("/api/v1/requests/", {"status": "nope"}, "status", "pending_batching"),
    ("/api/v1/batches/", {"created_after": "yesterday"}, "created_after", "date"),
    ("/api/v1/batches/", {"ordering": "secret"}, "ordering", "created_at"),
    ("/api/v1/batches/monitoring/", {"time_range": "2w"}, "time_range", "30d"),
    ("/api/v1/batches/monitoring/", {"limit": "500"}, "limit", "100"),
    ("/api/v1/batches/monitoring/", {"status": "x"}, "status", "validating"),
])
def test_invalid_parameters_are_a_400_naming_the_parameter(viewer, url, params, name, hint):
    response = client_for(viewer).get(url, params)
    assert response.status_code == 400
    assert name in response.json() and hint in " ".join(response.json()[name])


def test_monitoring_report_matches_the_raw_rows(standin, viewer):
    finished_batch([f"ok {i}" for i in range(8)] + ["x [[standin:token_limit_exceeded]]",
                                                     "y [[standin:token_limit_exceeded]]"])
    submit(company(), ["still pending"])
    data = client_for(viewer).get("/api/v1/batches/monitoring/", {"time_range": "1h",
                                                                  "include_details": "true"}).json()
    job = BatchJob.objects.get()
    summary = data["summary"]
    assert (summary["total_jobs"], summary["completed_jobs"], summary["failed_jobs"], summary["pending_jobs"]) == (
        1, 1, 0, 0)
    assert summary["total_requests"] == 10 and summary["processed_requests"] == 10
    assert summary["success_rate"] == 80.0
    expected_savings = sum(r.sync_cost - r.cost for r in AIProcessingRequest.objects.filter(cost__isnull=False))
    assert summary["cost_savings"]["current_period"] == str(expected_savings.quantize(Decimal("0.01")))
    assert summary["cost_savings"]["savings_percentage"] == "50.00"
    assert summary["average_processing_time_ms"] == round(
        (job.completed_at - job.submitted_at).total_seconds() * 1000)
    assert data["queues"] == {"pending": 1, "processing": 0, "completed": 8, "failed": 2}
    assert data["performance"]["throughput"] == {"requests_per_hour": 10.0, "jobs_per_hour": 1.0,
                                                 "average_batch_size": 10.0}
    assert data["performance"]["efficiency"]["error_rate"] == 20.0
    row = data["jobs"][0]
    assert row["batch_id"] == job.provider_batch_id and row["completed_count"] == 8 and row["failed_count"] == 2
    assert row["error_summary"] == [{"error": "token_limit_exceeded", "count": 2, "percentage": 20.0}]
    assert row["status_history"][-1]["status"] == "completed"
    assert data["pagination"] == {"page": 1, "limit": 50, "total": 1, "pages": 1}


def test_monitoring_is_constant_in_queries(standin, viewer, django_assert_max_num_queries):
    for _ in range(3):
        finished_batch([f"r{i}" for i in range(10)])
    api = client_for(viewer)
    with django_assert_max_num_queries(12):
        assert api.get("/api/v1/batches/monitoring/").status_code == 200
    with django_assert_max_num_queries(8):
        assert api.get("/api/v1/batches/").json()["count"] == 3


def test_operator_retries_a_batch_and_it_is_audited(standin, operator):
    job = finished_batch([f"ok {i}" for i in range(9)] + ["bad [[standin:token_limit_exceeded]]"])
    failed = AIProcessingRequest.objects.get(status=RequestStatus.FAILED)
    api = client_for(operator)

    dry = api.post(f"/api/v1/batches/{job.pk}/retry/", {"dry_run": True}, format="json")
    assert dry.json() == {"batch": job.pk, "resubmitted": 1, "dry_run": True}
    failed.refresh_from_db()
    assert failed.status == RequestStatus.FAILED

    response = api.post(f"/api/v1/batches/{job.pk}/retry/")
    assert response.status_code == 200 and response.json()["resubmitted"] == 1
    failed.refresh_from_db()
    assert failed.status == RequestStatus.PENDING_BATCHING and failed.batch is None and failed.attempts == 0
    event = AuditEvent.objects.get(action="batches.retry_batch")
    assert event.actor == operator and event.source == "api" and event.targets == [job.provider_batch_id]
    # Nothing left to retry: 409 saying so.
    again = api.post(f"/api/v1/batches/{job.pk}/retry/")
    assert again.status_code == 409 and "no failed" in again.json()["detail"]


def test_cancel_in_flight_batch_at_the_provider(standin, operator):
    from .conftest import control

    control(standin, "control", step_seconds=30)
    submit(company(), [f"r{i}" for i in range(10)])
    pipeline.create_batches()
    job = BatchJob.objects.get()
    api = client_for(operator)
    response = api.post(f"/api/v1/batches/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    assert standin.batches[job.provider_batch_id]["status"] == "cancelling"
    assert api.post(f"/api/v1/batches/{job.pk}/cancel/").status_code == 409
    assert AuditEvent.objects.filter(action="batches.cancel_batch", outcome="ok").count() == 1


def test_cancel_a_local_batch_before_submission(standin, operator):
    from .conftest import control

    submit(company(), [f"r{i}" for i in range(10)])
    control(standin, "control", fail_next={"status": 500, "count": 1})
    pipeline.create_batches()
    job = BatchJob.objects.get(status=BatchStatus.PENDING)
    response = client_for(operator).post(f"/api/v1/batches/{job.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert set(AIProcessingRequest.objects.values_list("error_code", flat=True)) == {"batch_cancelled"}


def test_viewers_cannot_act_and_unknown_ids_are_404(standin, viewer, operator):
    job = finished_batch([f"r{i}" for i in range(10)])
    assert client_for(viewer).post(f"/api/v1/batches/{job.pk}/retry/").status_code == 403
    assert client_for(viewer).post(f"/api/v1/batches/{job.pk}/cancel/").status_code == 403
    assert client_for(operator).post("/api/v1/batches/999999/retry/").status_code == 404
    assert APIClient().get("/api/v1/batches/").status_code in (401, 403)
    assert not AuditEvent.objects.exists()


def test_pipeline_health_shows_step_runs_and_circuits(standin, viewer):
    submit(company(), [f"r{i}" for i in range(10)])
    pipeline.create_batches()
    data = client_for(viewer).get("/api/v1/batches/pipeline/").json()
    run = data["steps"]["create"][0]
    assert run["items"] == 10 and run["queries"] > 0 and run["errors"] == 0
    assert data["circuits"][0]["provider"] == "openai" and data["circuits"][0]["open"] is False
