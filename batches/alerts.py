"""Batch metrics and scopes for monitoring's alert rules, registered from ``BatchesConfig.ready()``.

Monitoring never imports this app; it asks ``monitoring.registry``, which this module fills.
"""

from __future__ import annotations

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, Sum

from monitoring.registry import ABOVE, AT_LEAST, Check, Metric, Observation, ScopeKind, register_metric, register_scope

from .models import BatchJob, BatchStatus, Company

BATCH_SCOPES = ("all", "job_type", "company")


def _company(value: str) -> str | None:
    # ASCII digits only and within bigint, so the lookup itself can never fail.
    if not (value.isascii() and value.isdigit() and len(value) <= 18) or not Company.objects.filter(
            pk=int(value)).exists():
        return f"No company with id {value!r}; give the id of an existing company."
    return None


def _scoped(check: Check) -> Q:
    if check.scope.kind == "job_type":
        return Q(job_type=check.scope.value)
    if check.scope.kind == "company":
        return Q(company_id=int(check.scope.value))
    return Q()


def _batches_ended(check: Check, status: str, at: str, key: str) -> Observation:
    """Batches that ended in ``status`` (their ``at`` timestamp) within the window: the count and the latest ten."""
    window = {f"{at}__gte": check.since, f"{at}__lt": check.now}
    ended = BatchJob.objects.filter(_scoped(check), status=status, **window).order_by(f"-{at}", "-id")
    rows = list(ended.values("id", "provider_batch_id", "job_type", "company_id", at, "provider_errors")[:10])
    count = len(rows) if len(rows) < 10 else ended.count()
    return Observation(float(count), details={key: count, "batches": [
        {**row, at: row[at].isoformat()} for row in rows]})


def batches_failed(check: Check) -> Observation:
    """Batches that failed as a whole (provider status ``failed``) within the window."""
    return _batches_ended(check, BatchStatus.FAILED, "failed_at", "failed")


def batches_expired(check: Check) -> Observation:
    """Batches the provider did not finish within their completion window (status ``expired``) within the window.

    Their unfinished requests are retried, so nothing is lost, but results arrive a day late: worth knowing.
    """
    return _batches_ended(check, BatchStatus.EXPIRED, "expired_at", "expired")


def batch_error_rate(check: Check) -> Observation:
    """Failed requests among the processed requests of batches created in the window (percent)."""
    totals = BatchJob.objects.in_range(check.since, check.now).filter(_scoped(check)).aggregate(
        completed=Sum("completed_count"), failed=Sum("failed_count"))
    completed, failed = totals["completed"] or 0, totals["failed"] or 0
    processed = completed + failed
    value = round(100.0 * failed / processed, 2) if processed else None
    return Observation(value, details={"completed_requests": completed, "failed_requests": failed}, samples=processed)


def batch_processing_time(check: Check) -> Observation:
    """Average seconds from submission to completion of batches completed in the window."""
    processing = ExpressionWrapper(F("completed_at") - F("submitted_at"), output_field=DurationField())
    figures = (BatchJob.objects.filter(_scoped(check), status=BatchStatus.COMPLETED, submitted_at__isnull=False,
                                       completed_at__gte=check.since, completed_at__lt=check.now)
               .aggregate(avg=Avg(processing), batches=Count("id")))
    average = figures["avg"]
    return Observation(round(average.total_seconds(), 3) if average is not None else None,
                       details={"batches_timed": figures["batches"]}, samples=figures["batches"])


def register() -> None:
    """Add the batch scopes and metrics to monitoring's alert registry."""
    register_scope(ScopeKind("job_type", "A batch job type"))
    register_scope(ScopeKind("company", "A company", validate=_company))
    register_metric(Metric("batch_failed", "Batches failed", AT_LEAST, " batches", BATCH_SCOPES, batches_failed))
    register_metric(Metric("batch_expired", "Batches expired", AT_LEAST, " batches", BATCH_SCOPES, batches_expired))
    register_metric(Metric("batch_error_rate", "Batch request error rate", ABOVE, "%", BATCH_SCOPES,
                           batch_error_rate, max_threshold=100, sampled=True))
    register_metric(Metric("batch_processing_time", "Average batch processing time", ABOVE, "s", BATCH_SCOPES,
                           batch_processing_time, sampled=True))
