"""Periodic tasks (scheduled by beat): sweep lost jobs, roll up, evaluate alerts, prune by retention."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from . import alerts, conf, metrics, rollups, workers
from .models import ACTIVE_STATES, JobRun, JobState

logger = logging.getLogger("monitoring.tasks")

PRUNE_BATCH = 5_000


def sweep_lost(now: datetime | None = None) -> int:
    """Mark jobs LOST whose worker stopped answering and that have been active longer than ``LOST_AFTER``.

    No signal fires when a worker is SIGKILLed, so its jobs would otherwise look active forever. A job is
    only marked when the broker answered and its worker is not among the replies; a LOST row still yields
    to a real outcome a slow worker reports later (capture's state ranks).
    """
    now = now or timezone.now()
    report = workers.workers(refresh=True)
    if not report.available:
        logger.info("Sweep skipped: workers could not be asked (%s).", report.error)
        return 0
    cutoff = now - timedelta(seconds=conf.get("LOST_AFTER"))
    candidates = (JobRun.objects.filter(state__in=ACTIVE_STATES)
                  .filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, received_at__lt=cutoff))
                  .exclude(worker__in=report.online))
    marked = candidates.update(
        state=JobState.LOST, finished_at=now, updated_at=now, exception_type="WorkerLost",
        exception_message="Its worker stopped answering while the job was active.")
    if marked:
        logger.warning("Marked %d job(s) LOST: their worker no longer answers.", marked)
    return marked


def prune_records(now: datetime | None = None) -> int:
    """Delete job records older than ``RETENTION_DAYS`` in id batches; return how many were deleted."""
    days = conf.get("RETENTION_DAYS")
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(JobRun.objects.filter(created_at__lt=cutoff).exclude(state__in=ACTIVE_STATES)
                   .order_by().values_list("id", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        deleted += JobRun.objects.filter(id__in=ids).delete()[0]


@shared_task(name="monitoring.tasks.roll_up", ignore_result=True)
def roll_up() -> dict[str, Any]:
    """Keep the rollups in step with the job records."""
    result = rollups.roll_up()
    return {**result, "complete_until": result["complete_until"].isoformat() if result["complete_until"] else None}


@shared_task(name="monitoring.tasks.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    """Mark lost jobs and log how many are stuck."""
    lost = sweep_lost()
    stuck = metrics.stuck_jobs().count()
    if stuck:
        logger.warning("%d job(s) active longer than %ss.", stuck, conf.get("STUCK_AFTER"))
    return {"lost": lost, "stuck": stuck}


@shared_task(name="monitoring.tasks.prune", ignore_result=True)
def prune() -> dict[str, int]:
    """Apply the retention settings to job records and rollups."""
    return {"records": prune_records(), "rollups": rollups.prune()}


@shared_task(name="monitoring.tasks.evaluate_alerts", ignore_result=True)
def evaluate_alerts() -> dict[str, Any]:
    """Evaluate every enabled alert rule (every minute by default)."""
    return alerts.evaluate().as_dict()


@shared_task(name="monitoring.tasks.deliver_alert", bind=True, ignore_result=True, max_retries=None)
def deliver_alert(self: Any, delivery_id: int) -> str | None:
    """Send one alert notification; a failed attempt is retried with exponential backoff."""
    delivery = alerts.attempt_delivery(delivery_id)
    if delivery is None:
        return None
    if delivery.status == "pending":
        raise self.retry(countdown=alerts.backoff(delivery.attempts), queue=conf.get("ALERT_QUEUE"))
    return delivery.status
