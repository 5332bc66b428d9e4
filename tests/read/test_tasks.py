"""Periodic housekeeping: lost jobs are swept, rollups kept up, old records pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring import rollups, tasks, workers
from monitoring.models import JobRollup, JobRun, JobState, RollupState
from tests.factories import job_run

pytestmark = pytest.mark.django_db


def test_sweep_marks_jobs_of_vanished_workers_lost(settings):
    settings.MONITORING = {"LOST_AFTER": 600}
    workers.reset()
    now = timezone.now()
    gone = job_run(state=JobState.STARTED, worker="celery@gone", created_at=now - timedelta(hours=2))
    recent = job_run(state=JobState.STARTED, worker="celery@gone", created_at=now - timedelta(minutes=2))
    done = job_run(state=JobState.SUCCESS, worker="celery@gone", created_at=now - timedelta(hours=2))
    assert tasks.sweep_lost(now=now) == 1  # no worker answers; only the long-active job is lost
    gone.refresh_from_db()
    assert gone.state == JobState.LOST and gone.finished_at == now and gone.exception_type == "WorkerLost"
    assert JobRun.objects.get(pk=recent.pk).state == JobState.STARTED
    assert JobRun.objects.get(pk=done.pk).state == JobState.SUCCESS


def test_prune_deletes_old_finished_records_and_old_rollups(settings):
    settings.MONITORING = {"RETENTION_DAYS": 7, "ROLLUP_RETENTION_DAYS": 20}
    now = timezone.now()
    old = job_run(created_at=now - timedelta(days=8))
    old_active = job_run(state=JobState.STARTED, created_at=now - timedelta(days=8))
    kept = job_run(created_at=now - timedelta(days=6))
    job_run(created_at=now - timedelta(days=25))
    rollups.rebuild(now - timedelta(days=30), now)
    assert tasks.prune_records(now=now) == 2
    assert set(JobRun.objects.values_list("pk", flat=True)) == {old_active.pk, kept.pk}
    rollups.prune(now=now)
    cutoff = now - timedelta(days=20)
    assert not JobRollup.objects.filter(bucket__lt=rollups.floor_time(cutoff, 3600)).exists()
    assert JobRollup.objects.filter(task_name=old.task_name).exists()
    assert RollupState.objects.get().covered_from >= rollups.floor_time(cutoff, 3600)


def test_roll_up_task_runs_through_celery_eagerly():
    job_run(created_at=timezone.now() - timedelta(hours=1))
    result = tasks.roll_up.apply().get()
    assert result["rows"] > 0 and RollupState.objects.get().complete_until is not None
