"""The admin dashboards in a real browser: they load, draw charts, filter, refresh, act, and refuse viewers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batches import demo as batches_demo
from monitoring.models import AuditEvent, JobRun, JobState, QueueState
from tests.factories import job_run, wait_until

DASHBOARD = "/admin/monitoring/jobrun/dashboard/"
BATCHES = "/admin/batches/batchjob/dashboard/"
pytestmark = pytest.mark.django_db(transaction=True)


def seed_jobs(now):
    """Known runs: 4 x app.mail (3 ok, 1 failed) in the last hour, 6 x app.report two days ago, 1 running."""
    rows = []
    for minutes, state in ((5, JobState.SUCCESS), (15, JobState.SUCCESS), (25, JobState.SUCCESS),
                           (35, JobState.FAILURE)):
        rows.append(job_run(task_name="app.mail", queue="default", state=state,
                            created_at=now - timedelta(minutes=minutes),
                            exception_type="SMTPError" if state == JobState.FAILURE else "",
                            exception_message="550 mailbox unavailable" if state == JobState.FAILURE else ""))
    for hours in range(6):
        rows.append(job_run(task_name="app.report", queue="other", state=JobState.SUCCESS, runtime=4.0,
                            created_at=now - timedelta(days=2, hours=hours)))
    rows.append(job_run(task_name="app.report", queue="other", state=JobState.STARTED,
                        created_at=now - timedelta(minutes=1)))
    return rows


def card(page, key: str) -> str:
    return page.locator(f'[data-card="{key}"] .jm-card-value').inner_text().strip()


def assert_reachable(buttons) -> None:
    """Each button is the element at its own centre once scrolled to: not clipped, not under another panel."""
    for index in range(buttons.count()):
        button = buttons.nth(index)
        button.scroll_into_view_if_needed()
        assert button.evaluate("""b => { const r = b.getBoundingClientRect();
            return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === b; }"""), (
            button.inner_text())


def charts_drawn(page) -> dict[str, int]:
    """Points per chart, read from the Chart.js instances on the page."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('canvas[data-chart]')].map(
        c => [c.dataset.chart, window.Chart && Chart.getChart(c) ?
              Chart.getChart(c).data.datasets.reduce((n, d) => n + d.data.length, 0) : -1]))""")


def test_jobs_dashboard_loads_draws_charts_without_console_errors(browser_page, superuser):
    seed_jobs(timezone.now())
    browser_page.login(superuser)
    browser_page.open(DASHBOARD)
    page = browser_page.page

    page.wait_for_selector('canvas[data-chart="timeline"][data-drawn="true"]')
    points = charts_drawn(page)
    assert set(points) == {"throughput", "outcomes", "timeline"}
    assert points["throughput"] > 0 and points["outcomes"] > 0
    assert points["timeline"] == 5  # the runs started in the last 24 hours: 4 x app.mail and the running one
    assert card(page, "total") == "4"  # finished in the last 24 hours: the app.mail runs
    assert card(page, "success_rate") == "75.0%"
    assert card(page, "running") == "1"
    assert page.locator("#jm-recent tbody tr").count() == 11
    assert page.locator("#jm-errors").inner_text().count("SMTPError") == 1
    browser_page.screenshot("jobs-dashboard.png")
    page.emulate_media(color_scheme="dark")
    page.reload()
    page.wait_for_selector('canvas[data-chart="timeline"][data-drawn="true"]')
    browser_page.screenshot("jobs-dashboard-dark.png")
    assert browser_page.errors == []


def test_batches_dashboard_loads_draws_charts_without_console_errors(browser_page, superuser):
    batches_demo.seed(timezone.now(), days=2, batches_per_day=6)
    browser_page.login(superuser)
    browser_page.open(BATCHES)
    page = browser_page.page

    page.wait_for_selector('canvas[data-chart="batch_savings"][data-drawn="true"]')
    points = charts_drawn(page)
    assert set(points) == {"batch_queues", "batch_throughput", "batch_savings"}
    assert min(points.values()) > 0
    from batches.models import BatchJob

    since = timezone.now() - timedelta(hours=24)
    assert card(page, "total_jobs") == str(BatchJob.objects.filter(created_at__gte=since).count())
    assert page.locator("#jm-batch-jobs tbody tr").count() > 0
    assert page.locator("#jm-scheduler").is_visible() and page.locator("#jm-circuits").is_visible()
    # The batch table is the widest on the page: its Details/Retry/Cancel buttons must still be reachable.
    assert page.locator("#jm-batch-jobs .jm-action").count() > 0
    assert_reachable(page.locator("#jm-batch-jobs .jm-action"))
    browser_page.screenshot("batches-dashboard.png")
    assert browser_page.errors == []


def test_filters_change_the_numbers(browser_page, superuser):
    rows = seed_jobs(timezone.now())
    browser_page.login(superuser)
    browser_page.open(DASHBOARD)
    page = browser_page.page
    finished = [r for r in rows if r.finished_at]

    page.get_by_label("Time range", exact=True).select_option("7d")
    page.wait_for_url("**range=7d**")
    assert card(page, "total") == str(len(finished))  # 4 mail + 6 report runs

    page.get_by_label("Job type", exact=True).select_option("app.report")
    page.wait_for_url("**task=app.report**")
    assert card(page, "total") == str(sum(r.task_name == "app.report" for r in finished))
    assert card(page, "success_rate") == "100.0%"
    assert card(page, "average_duration") == "4.0 s"

    page.get_by_label("Time range", exact=True).select_option("1h")
    page.wait_for_url("**range=1h**")
    assert card(page, "total") == "0"  # the report runs are two days old
    assert browser_page.errors == []


def test_auto_refresh_updates_the_numbers(browser_page, superuser):
    seed_jobs(timezone.now())
    browser_page.login(superuser)
    page = browser_page.page
    page.clock.install()
    browser_page.open(DASHBOARD + "?range=24h&refresh=30")
    assert card(page, "total") == "4"
    assert page.locator("#jm-status").inner_text() in ("Live", "Polling")

    for _ in range(3):
        job_run(task_name="app.mail", queue="default", state=JobState.SUCCESS,
                created_at=timezone.now() - timedelta(seconds=30))
    page.clock.run_for(31_000)  # the 30-second timer fires: the body is fetched again
    wait_until(lambda: card(page, "total") == "7", timeout=10)
    assert browser_page.errors == []


@pytest.mark.worker
def test_operator_pauses_a_queue_and_retries_a_failed_job(browser_page, operator, celery_worker):
    failed = job_run(task_name="jobmonitor.tasks.add", queue="default", state=JobState.FAILURE, args=[2, 3],
                     kwargs={}, exception_type="ValueError", exception_message="bad input 7",
                     created_at=timezone.now() - timedelta(minutes=10))
    browser_page.login(operator)
    browser_page.open(DASHBOARD)
    page = browser_page.page
    row = page.locator('#jm-queues tr[data-queue="default"]')

    row.get_by_role("link", name="Pause").click()
    assert "Pause queue default? 1 worker consuming it" in page.locator(".confirm-count").inner_text()
    page.get_by_role("button", name="Yes, pause default").click()
    page.wait_for_url("**/dashboard/**")
    assert "Queue 'default' paused" in page.locator(".messagelist").inner_text()
    assert row.locator('[data-field="paused"]').inner_text() == "Paused"
    assert QueueState.objects.get(name="default").paused

    row.get_by_role("link", name="Resume").click()
    page.get_by_role("button", name="Yes, resume default").click()
    assert "resumed" in page.locator(".messagelist").inner_text()
    assert row.locator('[data-field="paused"]').inner_text() == "Active"

    page.locator("#jm-errors").get_by_role("button", name="Retry this group (1)").click()
    assert page.locator(".confirm-count").inner_text() == "Retry 1 job?"
    page.get_by_role("button", name="Yes, retry 1").click()
    assert "1/1 processed, 1 done" in page.locator(".messagelist").inner_text()
    retried = wait_until(lambda: JobRun.objects.filter(retry_of=failed.task_id, state=JobState.SUCCESS).first())
    browser_page.open(DASHBOARD)
    recent = page.locator(f'#jm-recent tr[data-task-id="{retried.task_id}"]')
    assert "Success" in recent.inner_text()
    assert set(AuditEvent.objects.values_list("action", "source", "outcome")) >= {
        ("pause_queue", "admin", "ok"), ("resume_queue", "admin", "ok"), ("bulk_retry", "admin", "ok")}
    assert browser_page.errors == []


def test_viewer_sees_no_action_buttons_and_a_forged_post_is_refused(browser_page, viewer):
    seed_jobs(timezone.now())
    browser_page.login(viewer)
    browser_page.open(DASHBOARD)
    page = browser_page.page
    page.wait_for_selector('canvas[data-chart="timeline"][data-drawn="true"]')

    assert page.locator(".jm-action").count() == 0
    assert page.locator("#jm-errors form").count() == 0
    status = page.evaluate("""async () => {
        const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
        const response = await fetch('/admin/monitoring/jobrun/dashboard/queues/default/pause/', {
            method: 'POST', headers: {'X-CSRFToken': token, 'Content-Type': 'application/x-www-form-urlencoded'},
            body: 'confirm=yes', credentials: 'same-origin'});
        return response.status;
    }""")
    assert status == 403
    assert not QueueState.objects.filter(paused=True).exists()
    assert not AuditEvent.objects.filter(action="pause_queue").exists()
    browser_page.errors = [e for e in browser_page.errors if "403" not in e]  # the refused fetch itself
    assert browser_page.errors == []


def test_every_action_button_can_be_reached_at_laptop_width(browser_page, superuser):
    # Long task names and ids in the half-width panels (stuck jobs, error groups) must wrap or scroll, never push
    # the Retry/Cancel buttons under the neighbouring panel where nobody can click them.
    now = timezone.now()
    for hours in (3, 2):
        job_run(task_name="jobmonitor.tasks.generate_quarterly_report", queue="reports", state=JobState.STARTED,
                worker="celery@reports-worker-eu-west-1", created_at=now - timedelta(hours=hours),
                started_at=now - timedelta(hours=hours))
    job_run(task_name="jobmonitor.tasks.generate_quarterly_report", state=JobState.FAILURE,
            created_at=now - timedelta(minutes=10),
            exception_type="ReportTimeout", exception_message="query for sales exceeded 300s")
    browser_page.login(superuser)
    browser_page.open(DASHBOARD)
    page = browser_page.page
    buttons = page.locator("#jm-stuck .jm-action, #jm-errors .jm-action")
    assert buttons.count() >= 5  # retry + cancel per stuck job, retry per error group
    assert_reachable(buttons)
    browser_page.screenshot("jobs-dashboard-actions.png")
    assert browser_page.errors == []
