"""The control management commands: summary tables, audited as commands, non-zero exit on failure."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from jobmonitor.celery import app as celery_app
from monitoring import capture
from monitoring.masking import MASK
from monitoring.models import AuditEvent, JobRun, JobState, QueueState

from ..factories import job_run
from .conftest import ROOT, purge, queue_length

IDLE = "ctl-cmd-idle"


@pytest.fixture(autouse=True)
def idle_queue(settings):
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": [IDLE]}
    purge(IDLE)
    yield
    purge(IDLE)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def failed(n: int, **fields) -> list[JobRun]:
    defaults = {"state": JobState.FAILURE, "task_name": "tests.control.echo", "args": [], "kwargs": {},
                "queue": "emails", "exception_type": "DeliveryError"}
    return [job_run(**{**defaults, **fields}) for _ in range(n)]


def test_retry_jobs_retries_the_filtered_failures_with_overrides(transactional_db, broker):
    targets = failed(3)
    failed(2, exception_type="ReportTimeout")

    output = run("retry_jobs", "--exception-type", "DeliveryError", "--priority", "5", "--queue-to", IDLE)

    assert queue_length(broker, IDLE) == 3
    capture.flush()
    retried = JobRun.objects.exclude(retry_of="")
    assert {r.retry_of for r in retried} == {t.task_id for t in targets}
    assert {(r.priority, r.queue) for r in retried} == {(5, IDLE)}
    for target in targets:
        assert target.task_id in output
    assert "selected  done  skipped  failed" in output.replace("  ", "  ")
    event = AuditEvent.objects.get(action="bulk_retry")
    assert event.source == "command" and event.actor_name.startswith("os:")


def test_retry_jobs_limit_takes_the_oldest_first(transactional_db, broker):
    jobs = failed(4, queue=IDLE)

    run("retry_jobs", "--queue", IDLE, "--limit", "2")

    capture.flush()
    assert set(JobRun.objects.exclude(retry_of="").values_list("retry_of", flat=True)) == {
        jobs[0].task_id, jobs[1].task_id}


def test_retry_jobs_dry_run_changes_nothing(transactional_db, broker):
    failed(3, queue=IDLE)

    output = run("retry_jobs", "--queue", IDLE, "--dry-run")

    assert "Dry run: 3 job(s) selected" in output
    assert queue_length(broker, IDLE) == 0
    assert not AuditEvent.objects.exists()


def test_retry_jobs_fails_when_a_job_could_not_be_retried(transactional_db, broker):
    failed(1, queue=IDLE)
    failed(1, queue=IDLE, kwargs={"password": MASK})

    with pytest.raises(CommandError, match="1 of 2 job"):
        run("retry_jobs", "--queue", IDLE)
    assert queue_length(broker, IDLE) == 1


def test_invalid_overrides_name_the_option_and_change_nothing(transactional_db, broker):
    failed(1, queue=IDLE)

    with pytest.raises(CommandError, match=r"priority: must be from 0 to 9.*Allowed: 0-9"):
        run("retry_jobs", "--queue", IDLE, "--priority", "12")
    assert queue_length(broker, IDLE) == 0


def test_cancel_jobs_by_id(transactional_db):
    waiting = job_run(state=JobState.PENDING, queue=IDLE)

    output = run("cancel_jobs", waiting.task_id)

    assert "cancelled" in output
    assert JobRun.objects.get(pk=waiting.pk).state == JobState.REVOKED


def test_pause_and_resume_queue(transactional_db):
    assert "paused" in run("pause_queue", IDLE)
    assert QueueState.objects.get(name=IDLE).paused
    with pytest.raises(CommandError, match="already paused"):
        run("pause_queue", IDLE)
    assert "resumed" in run("resume_queue", IDLE)
    assert not QueueState.objects.get(name=IDLE).paused
    with pytest.raises(CommandError, match="Unknown queue 'nope'"):
        run("pause_queue", "nope")


def test_purge_queue_needs_confirmation(transactional_db, broker):
    celery_app.send_task("tests.control.echo", queue=IDLE)

    with pytest.raises(CommandError, match="--yes"):
        run("purge_queue", IDLE)
    assert queue_length(broker, IDLE) == 1

    output = run("purge_queue", IDLE, "--yes")
    assert "Purged 1 waiting message(s)" in output
    assert queue_length(broker, IDLE) == 0
    capture.flush()  # written now, so no late write reaches the next test


def test_clear_jobs_deletes_by_type_in_batches(transactional_db, settings):
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": [IDLE], "CLEAR_BATCH_SIZE": 10}
    failed(25, queue=IDLE)
    kept = job_run(state=JobState.SUCCESS, queue=IDLE)

    assert "would delete" in run("clear_jobs", IDLE, "--type", "failed", "--dry-run")
    assert JobRun.objects.count() == 26
    output = run("clear_jobs", IDLE, "--type", "failed", "--yes")

    assert "Deleted 25 failed record(s)" in output
    assert list(JobRun.objects.values_list("pk", flat=True)) == [kept.pk]


def test_a_refused_command_exits_non_zero_with_a_hint(transactional_db):
    db = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "TEST_DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"}
    QueueState.objects.create(name=IDLE, paused=True, paused_at=timezone.now())

    done = subprocess.run([sys.executable, "manage.py", "pause_queue", IDLE], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert "already paused" in done.stderr
