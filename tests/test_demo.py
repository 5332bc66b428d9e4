"""The demo history is realistic: 30 days, several queues and job types, every kind of outcome."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Count, Max, Min

from jobmonitor.demo.seed import seed_history
from monitoring.models import JobRun, JobState


@pytest.mark.sqlite
@pytest.mark.django_db
def test_seeded_history_covers_30_days_and_every_kind_of_job():
    from django.utils import timezone

    now = timezone.now()
    # Only the seeded rows: a capture flush from an earlier test can commit a row outside this test's transaction.
    existing = list(JobRun.objects.values_list("id", flat=True))
    created = seed_history(days=30, now=now)
    rows = JobRun.objects.exclude(id__in=existing)
    assert rows.count() == created > 30 * 500

    span = rows.aggregate(first=Min("created_at"), last=Max("created_at"))
    assert span["first"] <= now - timedelta(days=29) and span["last"] <= now
    assert rows.values("queue").distinct().count() >= 4
    assert rows.values("task_name").distinct().count() >= 4
    states = dict(rows.values_list("state").annotate(n=Count("id")))
    assert states[JobState.SUCCESS] > states[JobState.FAILURE] > 0
    assert states[JobState.STARTED] >= 4 and states[JobState.PENDING] >= 3 and states[JobState.REVOKED] > 0
    assert rows.failed().exclude(traceback="").count() == states[JobState.FAILURE]
    assert rows.filter(retries__gt=0).exists()
    assert rows.filter(runtime__gt=600).exists()  # long-running reports
    assert rows.scheduled(now).count() >= 3
    assert rows.stuck(timedelta(minutes=10), now).count() == 4
    assert rows.stuck(timedelta(hours=2), now).count() == 1


@pytest.mark.sqlite
@pytest.mark.django_db
def test_demo_setup_creates_a_superuser_with_a_printed_password(capsys):
    call_command("demo", "--setup-only", "--days", "1", "--reseed")
    out = capsys.readouterr().out
    assert "Seeded" in out
    from django.contrib.auth.models import User

    assert User.objects.get(username="admin").is_superuser


@pytest.mark.django_db
def test_demo_rejects_a_nonsense_history_length():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--days"):
        call_command("demo", "--setup-only", "--days", "0")
