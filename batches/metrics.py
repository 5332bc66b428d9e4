"""Read-side services of the batches app: the monitoring report (summary, queues, performance, jobs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from . import conf, pricing
from .models import AIProcessingRequest, BatchJob, BatchStatus, PipelineRun, PipelineStep, RequestStatus
from .pipeline import circuit_state

TIME_RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
                                     "30d": timedelta(days=30)}
# Bucket size of the chart series per range: about 24-60 points each.
SERIES_UNITS: dict[str, tuple[str, timedelta]] = {"1h": ("minute", timedelta(minutes=1)),
                                                  "24h": ("hour", timedelta(hours=1)),
                                                  "7d": ("hour", timedelta(hours=1)),
                                                  "30d": ("day", timedelta(days=1))}
FAILED_JOB_STATES = (BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)
TENTH = Decimal("0.1")


def _pct(part: float | int | Decimal, whole: float | int | Decimal) -> float:
    """``part`` as a percentage of ``whole``, to one decimal (0 when there is no whole)."""
    if not whole:
        return 0.0
    return float((Decimal(part) * 100 / Decimal(whole)).quantize(TENTH, rounding=ROUND_HALF_UP))


def _ms(value: timedelta | None) -> int | None:
    return round(value.total_seconds() * 1000) if value is not None else None


def _finished_at(job: BatchJob) -> datetime | None:
    return job.completed_at or job.failed_at or job.expired_at or job.cancelled_at


def error_summary(job: BatchJob) -> list[dict[str, Any]]:
    """The job's errors by code, most frequent first, each with its share of the job's requests."""
    return [{"error": code, "count": count, "percentage": _pct(count, job.request_count)}
            for code, count in sorted(job.error_summary.items(), key=lambda item: (-item[1], item[0]))]


def job_row(job: BatchJob, *, details: bool = False) -> dict[str, Any]:
    """One job of the monitoring report."""
    finished = _finished_at(job)
    row = {
        "id": job.pk, "batch_id": job.provider_batch_id, "status": job.status, "job_type": job.job_type,
        "company": job.company_id, "model": job.model, "request_count": job.request_count,
        "completed_count": job.completed_count, "failed_count": job.failed_count, "created_at": job.created_at,
        "started_at": job.in_progress_at, "completed_at": finished,
        "processing_time_ms": _ms(finished - job.submitted_at) if finished and job.submitted_at else None,
        "cost_estimate": pricing.to_cents(job.cost), "cost_at_sync_price": pricing.to_cents(job.sync_cost),
        "savings": pricing.to_cents(job.savings), "error_summary": error_summary(job),
    }
    if details:
        row.update({
            "endpoint": job.endpoint, "input_file_id": job.input_file_id, "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id, "submitted_at": job.submitted_at, "expires_at": job.expires_at,
            "finalizing_at": job.finalizing_at, "status_history": job.status_history,
            "provider_errors": job.provider_errors, "last_error": job.last_error, "exact_cost": str(job.cost),
            "input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
        })
    return row


def monitoring_report(*, time_range: str = "24h", status: str | None = None, job_type: str | None = None,
                      include_details: bool = False, page: int = 1, limit: int = 50,
                      now: datetime | None = None) -> dict[str, Any]:
    """Summary, queues, performance and a page of jobs for the period (six queries whatever the volume)."""
    now = now or timezone.now()
    period = TIME_RANGES[time_range]
    jobs = BatchJob.objects.in_range(now - period, now)
    if status:
        jobs = jobs.filter(status=status)
    if job_type:
        jobs = jobs.filter(job_type=job_type)
    processing = ExpressionWrapper(F("completed_at") - F("submitted_at"), output_field=DurationField())
    totals = jobs.aggregate(
        total=Count("id"), completed=Count("id", filter=Q(status=BatchStatus.COMPLETED)),
        failed=Count("id", filter=Q(status__in=FAILED_JOB_STATES)),
        requests=Sum("request_count"), completed_requests=Sum("completed_count"),
        failed_requests=Sum("failed_count"), cost=Sum("cost"), sync_cost=Sum("sync_cost"), savings=Sum("savings"),
        avg_processing=Avg(processing, filter=Q(status=BatchStatus.COMPLETED, submitted_at__isnull=False)),
        full=Count("id", filter=Q(request_count__gte=conf.get("MIN_BATCH_SIZE"))),
        finished_requests=Sum("request_count", filter=Q(results_processed_at__isnull=False)),
    )
    total_jobs = totals["total"]
    requests = totals["requests"] or 0
    completed_requests = totals["completed_requests"] or 0
    processed = completed_requests + (totals["failed_requests"] or 0)
    savings = totals["savings"] or Decimal(0)
    sync_cost = totals["sync_cost"] or Decimal(0)
    hours = period.total_seconds() / 3600

    queue_counts = AIProcessingRequest.objects.aggregate(
        pending=Count("id", filter=Q(status__in=(RequestStatus.PENDING_BATCHING, RequestStatus.RETRY_SCHEDULED))),
        processing=Count("id", filter=Q(status=RequestStatus.BATCHING_IN_PROGRESS)),
    )
    finished = (AIProcessingRequest.objects.filter(completed_at__gte=now - period, completed_at__lt=now)
                .aggregate(completed=Count("id", filter=Q(status=RequestStatus.COMPLETED)),
                           failed=Count("id", filter=Q(status=RequestStatus.FAILED))))
    page_jobs = list(jobs.order_by("-created_at", "-id")[(page - 1) * limit: page * limit])
    return {
        "time_range": time_range,
        "period": {"start": now - period, "end": now},
        "summary": {
            "total_jobs": total_jobs, "completed_jobs": totals["completed"], "failed_jobs": totals["failed"],
            "pending_jobs": total_jobs - totals["completed"] - totals["failed"],
            "total_requests": requests, "processed_requests": processed,
            "cost_savings": {
                "current_period": pricing.to_cents(savings),
                "projected_monthly": pricing.projected_monthly(savings, period.total_seconds()),
                "savings_percentage": pricing.savings_percentage(sync_cost - savings, sync_cost),
                "cost": pricing.to_cents(totals["cost"]), "cost_at_sync_price": pricing.to_cents(sync_cost),
            },
            "average_processing_time_ms": _ms(totals["avg_processing"]),
            "success_rate": _pct(completed_requests, processed),
        },
        "queues": {"pending": queue_counts["pending"], "processing": queue_counts["processing"],
                   "completed": finished["completed"], "failed": finished["failed"]},
        "performance": {
            "throughput": {
                "requests_per_hour": round(requests / hours, 2), "jobs_per_hour": round(total_jobs / hours, 2),
                "average_batch_size": round(requests / total_jobs, 1) if total_jobs else 0.0,
            },
            "efficiency": {
                # Jobs that filled the minimum batch size rather than leaving early on the maximum wait.
                "batch_utilization": _pct(totals["full"], total_jobs),
                # Requests of finished jobs that produced a result.
                "processing_efficiency": _pct(completed_requests, totals["finished_requests"] or 0),
                "error_rate": _pct(processed - completed_requests, processed),
            },
        },
        "jobs": [job_row(job, details=include_details) for job in page_jobs],
        "pagination": {"page": page, "limit": limit, "total": total_jobs,
                       "pages": (total_jobs + limit - 1) // limit if total_jobs else 0},
    }


def pipeline_health(now: datetime | None = None, runs_per_step: int = 5) -> dict[str, Any]:
    """The latest runs of each pipeline step and the providers' circuit breakers."""
    steps = {}
    for step in PipelineStep.values:
        runs = PipelineRun.objects.filter(step=step).order_by("-started_at")[:runs_per_step]
        steps[step] = [{"started_at": r.started_at, "duration": round(r.duration, 4), "items": r.items,
                        "queries": r.queries, "errors": r.errors, "detail": r.detail} for r in runs]
    return {"steps": steps, "circuits": circuit_state(now)}


def series(*, time_range: str = "24h", job_type: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Jobs, requests, outcomes, cost and savings per time bucket of the period (one query), for charts."""
    now = now or timezone.now()
    period = TIME_RANGES[time_range]
    unit, step = SERIES_UNITS[time_range]
    jobs = BatchJob.objects.in_range(now - period, now)
    if job_type:
        jobs = jobs.filter(job_type=job_type)
    rows = {row["bucket"]: row for row in (
        jobs.order_by().annotate(bucket=Trunc("created_at", unit, tzinfo=UTC)).values("bucket")
        .annotate(jobs=Count("id"), requests=Sum("request_count"), completed=Sum("completed_count"),
                  failed=Sum("failed_count"), cost=Sum("cost"), sync_cost=Sum("sync_cost"), savings=Sum("savings")))}
    first = (now - period).astimezone(UTC)
    first = first.replace(second=0, microsecond=0)
    if unit in ("hour", "day"):
        first = first.replace(minute=0)
    if unit == "day":
        first = first.replace(hour=0)
    points = []
    moment = first
    while moment < now:
        row = rows.get(moment, {})
        sync = row.get("sync_cost") or Decimal(0)
        savings = row.get("savings") or Decimal(0)
        points.append({"start": moment, "jobs": row.get("jobs", 0), "requests": row.get("requests") or 0,
                       "completed": row.get("completed") or 0, "failed": row.get("failed") or 0,
                       "cost": pricing.to_cents(row.get("cost")), "savings": pricing.to_cents(savings),
                       # None (a gap in the chart) rather than 0 % where nothing was priced.
                       "savings_percentage": pricing.savings_percentage(sync - savings, sync) if sync else None})
        moment += step
    return {"time_range": time_range, "step_seconds": int(step.total_seconds()), "points": points}
