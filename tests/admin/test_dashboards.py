"""The dashboards as admin pages: who may open them, their figures, and the actions behind confirmations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from batches import demo as batches_demo
from batches.models import AIProcessingRequest, BatchJob, RequestStatus
from monitoring.models import AuditEvent, BulkOperation, JobRun, JobState
from tests.factories import job_run, user

DASHBOARD = reverse("admin:monitoring_jobrun_dashboard")
BATCHES = reverse("admin:batches_batchjob_dashboard")


def cards(response) -> dict[str, object]:
    return {card["key"]: card["value"] for card in response.context["cards"]}


def seed(now, per_hour: int = 2):
    """Runs of two job types in the last 24 hours and the 24 before (the previous period)."""
    runs = []
    for hours in range(1, 48):
        for n in range(per_hour):
            state = JobState.FAILURE if (hours + n) % 5 == 0 else JobState.SUCCESS
            runs.append(job_run(task_name="app.mail" if n % 2 else "app.report", state=state,
                                runtime=1.0 + n, created_at=now - timedelta(hours=hours, minutes=n),
                                exception_type="SMTPError" if state == JobState.FAILURE else "",
                                exception_message=f"550 user{hours} unknown" if state == JobState.FAILURE else ""))
    return runs


@pytest.mark.parametrize("url", [DASHBOARD, BATCHES])
def test_viewers_open_the_dashboards_without_action_buttons(viewer_client, url):
    response = viewer_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="button jm-action"' not in page
    assert "<h1>" in page and "breadcrumbs" in page


@pytest.mark.parametrize("url", [DASHBOARD, BATCHES])
def test_staff_without_a_role_are_refused_and_anonymous_users_sent_to_login(client, db, url):
    assert client.get(url).status_code == 302
    client.force_login(user())
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", [DASHBOARD, BATCHES, reverse("admin:monitoring_jobrun_changelist")])
def test_every_admin_page_carries_the_admin_sites_title(viewer_client, url):
    page = viewer_client.get(url).content.decode()
    title = page[page.index("<title>") + len("<title>"):page.index("</title>")]
    assert title.endswith("| jobmonitor") and "Django" not in title


def test_admin_index_links_to_both_dashboards(viewer_client):
    page = viewer_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}"' in page and f'href="{BATCHES}"' in page


def test_jobs_dashboard_figures_match_the_records(viewer_client, db):
    now = timezone.now()
    runs = seed(now)
    current = [r for r in runs if r.finished_at >= now - timedelta(hours=24)]
    previous = [r for r in runs if now - timedelta(hours=48) <= r.finished_at < now - timedelta(hours=24)]

    response = viewer_client.get(DASHBOARD, {"range": "24h"})
    figures = cards(response)

    ok, bad = (sum(r.state == s for r in current) for s in (JobState.SUCCESS, JobState.FAILURE))
    assert figures["total"] == len(current)
    assert figures["failed"] == bad
    assert figures["success_rate"] == round(100 * ok / (ok + bad), 2)
    assert figures["average_duration"] == round(sum(r.runtime for r in current) / len(current), 3)
    total_card = next(c for c in response.context["cards"] if c["key"] == "total")
    assert total_card["previous"] == len(previous)
    report = {row["task_name"]: row for row in response.context["job_types"]}
    assert report["app.mail"]["total_runs"] == sum(r.task_name == "app.mail" for r in current)

    mail = viewer_client.get(DASHBOARD, {"range": "24h", "task": "app.mail"})
    assert cards(mail)["total"] == sum(r.task_name == "app.mail" for r in current)
    mail_failed = next(c for c in mail.context["cards"] if c["key"] == "failed")
    assert mail_failed["previous"] == sum(r.task_name == "app.mail" and r.state == JobState.FAILURE for r in previous)
    mail_total = next(c for c in mail.context["cards"] if c["key"] == "total")
    assert mail_total["previous"] == sum(r.task_name == "app.mail" for r in previous)


def test_jobs_dashboard_query_count_does_not_grow_with_the_data(viewer_client, db):
    now = timezone.now()
    seed(now, per_hour=1)
    with CaptureQueriesContext(connection) as small:
        viewer_client.get(DASHBOARD)
    seed(now - timedelta(minutes=30), per_hour=4)
    with CaptureQueriesContext(connection) as large:
        viewer_client.get(DASHBOARD)
    assert len(large.captured_queries) == len(small.captured_queries)


def test_bad_controls_fall_back_to_the_defaults_with_an_error(viewer_client, db):
    response = viewer_client.get(DASHBOARD, {"range": "custom", "since": "2026-01-02T00:00", "until": "2026-01-01"})
    assert response.status_code == 200
    assert "The start of the range must be before its end." in response.content.decode()
    assert response.context["range_name"] == "24h"


def test_clear_confirmation_states_the_count_then_deletes_and_audits(operator_client, db):
    failed = [job_run(queue="jm-clear", state=JobState.FAILURE) for _ in range(3)]
    job_run(queue="jm-clear", state=JobState.SUCCESS)
    url = reverse("admin:monitoring_jobrun_queue_action", args=["jm-clear", "clear"])

    page = operator_client.get(url, {"type": "failed"}).content.decode()
    assert "Delete 3 finished job records of queue jm-clear?" in page
    assert JobRun.objects.filter(queue="jm-clear").count() == 4  # nothing happens before confirmation

    response = operator_client.post(url, {"type": "failed", "next": DASHBOARD})
    assert response.status_code == 302 and response["Location"] == DASHBOARD
    assert not JobRun.objects.filter(pk__in=[j.pk for j in failed]).exists()
    assert JobRun.objects.filter(queue="jm-clear").count() == 1
    event = AuditEvent.objects.get(action="clear_jobs")
    assert (event.source, event.outcome, event.targets) == ("admin", "ok", ["jm-clear"])


def test_queue_actions_refuse_viewers_and_unknown_names(viewer_client, operator_client, db):
    job_run(queue="jm-known")
    url = reverse("admin:monitoring_jobrun_queue_action", args=["jm-known", "purge"])
    assert viewer_client.get(url).status_code == 403
    assert viewer_client.post(url).status_code == 403
    assert not AuditEvent.objects.exists()
    assert operator_client.get(reverse("admin:monitoring_jobrun_queue_action",
                                       args=["jm-known", "explode"])).status_code == 404
    assert operator_client.get(reverse("admin:monitoring_jobrun_queue_action",
                                       args=["jm-nowhere", "purge"])).status_code == 404


def test_retry_this_group_previews_exactly_the_group_and_states_the_count(operator_client, db):
    now = timezone.now()
    for n in range(3):
        job_run(state=JobState.FAILURE, exception_type="SMTPError", exception_message=f"550 user{n} unknown",
                created_at=now - timedelta(minutes=n + 1))
    job_run(state=JobState.FAILURE, exception_type="SMTPError", exception_message="timed out",
            created_at=now - timedelta(minutes=5))
    dashboard = operator_client.get(DASHBOARD)
    group = next(g for g in dashboard.context["errors"] if g["message"] == "<n> user<n> unknown")

    response = operator_client.post(reverse("admin:monitoring_jobrun_retry_group"), {
        "exception_type": group["exception_type"], "message": group["message"],
        "since": (now - timedelta(hours=1)).isoformat(), "until": now.isoformat()})

    operation = BulkOperation.objects.get()
    assert response["Location"] == reverse("admin:monitoring_jobrun_bulk_confirm", args=[operation.pk])
    assert operation.total == 3 and operation.action == "retry"
    assert "Retry 3 jobs?" in operator_client.get(response["Location"]).content.decode()


def test_viewers_cannot_retry_a_group(viewer_client, db):
    assert viewer_client.post(reverse("admin:monitoring_jobrun_retry_group")).status_code == 403
    assert not BulkOperation.objects.exists()


def test_batches_dashboard_figures_come_from_the_report(viewer_client, db):
    now = timezone.now()
    batches_demo.seed(now, days=2, batches_per_day=6)
    recent = BatchJob.objects.filter(created_at__gte=now - timedelta(hours=24), created_at__lt=now)
    response = viewer_client.get(BATCHES, {"range": "24h"})

    assert cards(response)["total_jobs"] == recent.count()
    savings = sum(job.savings for job in recent)
    assert cards(response)["cost_savings"] == f"${savings.quantize(savings.__class__('0.01'))}"
    assert len(response.context["series"]) in (24, 25)  # hourly buckets; the first and last are partial
    assert sum(p["jobs"] for p in response.context["series"]) == recent.count()


def test_batch_retry_states_the_count_then_resubmits_and_audits(operator_client, db):
    batches_demo.seed(timezone.now(), days=1, batches_per_day=4)
    job = BatchJob.objects.filter(failed_count__gt=0).first()
    failed = AIProcessingRequest.objects.filter(batch=job, status__in=(RequestStatus.FAILED,
                                                                      RequestStatus.RETRY_SCHEDULED)).count()
    url = reverse("admin:batches_batchjob_retry", args=[job.pk])

    page = operator_client.get(url).content.decode()
    assert f"Resubmit {failed} failed or expired request" in page

    operator_client.post(url)
    assert AIProcessingRequest.objects.filter(status=RequestStatus.PENDING_BATCHING, batch=None).count() == failed
    assert AuditEvent.objects.get(action="batches.retry_batch").source == "admin"


def test_batch_actions_refuse_viewers(viewer_client, db):
    batches_demo.seed(timezone.now(), days=1, batches_per_day=2)
    job = BatchJob.objects.first()
    for name in ("retry", "cancel"):
        assert viewer_client.post(reverse(f"admin:batches_batchjob_{name}", args=[job.pk])).status_code == 403
    assert not AuditEvent.objects.exists()


def test_jobs_dashboard_lists_the_open_alerts_most_severe_first(viewer_client, db):
    from monitoring import alerts, rollups

    now = timezone.now()
    for minutes in range(2, 42, 2):  # 20 failures: the default error-rate rule's minimum of samples
        job_run(task_name="app.report", state=JobState.FAILURE, exception_type="Timeout",
                created_at=now - timedelta(minutes=minutes))
    rollups.rebuild(now - timedelta(hours=2), now)
    alerts.evaluate(now=now)
    expected = alerts.open_alerts()
    assert expected["count"] >= 1 and "High error rate" in {a["rule_name"] for a in expected["alerts"]}

    page = viewer_client.get(DASHBOARD).content.decode()
    section = page[page.index('id="jm-alerts"'):page.index('aria-labelledby="jm-queues-title"')]
    assert f"Open alert{'s' if expected['count'] != 1 else ''} ({expected['count']})" in section
    assert "High error rate" in section
    names = [a["rule_name"] for a in expected["alerts"]]
    positions = [section.index(name) for name in names]
    assert positions == sorted(positions)  # the order of the service: most severe first
