"""Non-Celery jobs (cron scripts, commands) are recorded as JobRuns with their own job type."""

import pytest

from monitoring.models import JobOrigin, JobRun, JobState
from monitoring.tracking import track


@track("reports.nightly_export", queue="cron")
def nightly_export(day: str, *, dry_run: bool = False) -> int:
    return 42


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
def test_decorator_records_a_successful_run_with_arguments_and_result():
    assert nightly_export("2026-11-21", dry_run=True) == 42
    run = JobRun.objects.get(task_name="reports.nightly_export")
    assert run.origin == JobOrigin.TRACKED and run.queue == "cron"
    assert run.state == JobState.SUCCESS and run.result == "42"
    assert run.args == ["2026-11-21"] and run.kwargs == {"dry_run": True}
    assert run.started_at <= run.finished_at and run.runtime >= 0
    assert run.task_id.startswith("tracked-")


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
def test_context_manager_records_a_failure_and_reraises():
    with pytest.raises(ZeroDivisionError), track("billing.sync") as job:
        running = JobRun.objects.get(task_id=job.task_id)
        assert running.state == JobState.STARTED  # visible while it runs
        raise ZeroDivisionError("division by zero")
    run = JobRun.objects.get(task_id=job.task_id)
    assert run.state == JobState.FAILURE and run.exception_type == "ZeroDivisionError"
    assert 'raise ZeroDivisionError("division by zero")' in run.traceback


@pytest.mark.sqlite
@pytest.mark.django_db(transaction=True)
def test_unserializable_arguments_are_recorded_with_a_readable_repr_and_a_marker():
    class Invoice:
        def __repr__(self) -> str:
            return "<Invoice 17>"

    with track("billing.print", args=[Invoice()], kwargs={"secret_token": "abc"}) as job:
        pass
    run = JobRun.objects.get(task_id=job.task_id)
    assert run.args == {"__unserializable__": True, "repr": "[<Invoice 17>]"}
    assert run.arguments_truncated is True
    assert run.kwargs == {"secret_token": "********"}
