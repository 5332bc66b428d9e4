"""The demo hooks seed a month of believable history and keep new requests flowing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from batches import demo, metrics, pipeline
from batches.models import AIProcessingRequest, BatchJob, Company

from ..factories import wait_until

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_seed_creates_thirty_days_of_consistent_history():
    counts = demo.seed(NOW)
    assert counts["companies"] == 5 and counts["batches"] > 400 and counts["requests"] > 10 * counts["batches"]
    job = BatchJob.objects.filter(status="completed").first()
    assert job.request_count == AIProcessingRequest.objects.filter(batch=job).count()
    assert job.cost == sum(r.cost or 0 for r in AIProcessingRequest.objects.filter(batch=job))
    report = metrics.monitoring_report(time_range="30d", now=NOW)
    assert report["summary"]["total_jobs"] == counts["batches"]
    assert report["summary"]["cost_savings"]["savings_percentage"] == 50


def test_submitted_demo_requests_run_through_the_stand_in(standin):
    demo.seed(NOW)
    assert demo.submit_some(20) == 20
    pipeline.create_batches()
    wait_until(lambda: pipeline.check_batches() and not BatchJob.objects.in_flight().exists())
    pipeline.process_results()
    new = AIProcessingRequest.objects.exclude(batch__provider_batch_id__startswith="batch_demo_")
    assert new.count() == 20 and not new.filter(status="batching_in_progress").exists()


def test_no_demo_companies_no_requests():
    Company.objects.all().delete()
    assert demo.submit_some(5) == 0
