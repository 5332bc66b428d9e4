"""Job-record changelists stay cheap on big tables: estimated or capped counts, no DISTINCT, no LIKE; CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import JobRun, JobState
from tests.factories import job_run

CHANGELIST = reverse("admin:monitoring_jobrun_changelist")
EXPORT = reverse("admin:monitoring_jobrun_export")


@pytest.fixture
def jobs(db):
    now = timezone.now()
    runs = [job_run(task_name=f"app.{'mail' if i % 3 else 'report'}", queue="default" if i % 2 else "other",
                    state=JobState.FAILURE if i % 4 == 0 else JobState.SUCCESS,
                    created_at=now - timedelta(minutes=i)) for i in range(30)]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_jobrun")  # the planner's estimate the unfiltered count uses
    return runs


def test_rows_show_when_each_job_was_first_seen_in_the_current_time_zone(admin_client_, db, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    job = job_run(created_at=datetime(2026, 7, 1, 22, 30, 5, tzinfo=UTC), runtime=0.38075983154232645,
                  task_name="app.tasks.send_<mail>")
    page = admin_client_.get(CHANGELIST).content.decode()
    assert '<td class="field-first_seen">2026-07-02 00:30:05</td>' in page  # UTC+2 in summer
    assert '<td class="field-runtime_label">381 ms</td>' in page
    assert '<td class="field-task_name_label">app.<wbr>tasks.<wbr>send_&lt;mail&gt;</td>' in page  # escaped
    assert job.task_id in page


def test_a_job_page_shows_its_durations_readably(admin_client_, db):
    job = job_run(runtime=245.5, wait_time=0.0421)
    page = admin_client_.get(reverse("admin:monitoring_jobrun_change", args=[job.pk])).content.decode()
    assert "4 min 05 s" in page and "42 ms" in page


def sql_of(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def test_unfiltered_list_shows_the_estimate_and_never_counts_the_table(admin_client_, jobs, settings):
    settings.MONITORING = {**settings.MONITORING, "ADMIN_COUNT_CAP": 10}
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(CHANGELIST).content.decode()

    assert "about 30 job runs" in page
    statements = sql_of(queries)
    assert not [s for s in statements if s.startswith('SELECT COUNT(*) AS "__count" FROM "monitoring_jobrun"')]
    assert not [s for s in statements if "DISTINCT" in s.upper() and "monitoring_jobrun" in s]
    assert not [s for s in statements if " LIKE " in s.upper()]


def test_filtered_list_counts_up_to_the_cap(admin_client_, jobs, settings):
    settings.MONITORING = {**settings.MONITORING, "ADMIN_COUNT_CAP": 5}
    failed = sum(j.state == JobState.FAILURE for j in jobs)
    assert failed > 5

    page = admin_client_.get(CHANGELIST, {"state__exact": "FAILURE"}).content.decode()
    assert "more than 5 job runs" in page

    settings.MONITORING = {**settings.MONITORING, "ADMIN_COUNT_CAP": 100}
    page = admin_client_.get(CHANGELIST, {"state__exact": "FAILURE"}).content.decode()
    assert f"{failed} job runs" in page and "more than" not in page


def test_a_search_counts_like_the_jobs_api_a_large_task_name_branch_on_its_own(admin_client_, jobs, settings):
    settings.MONITORING = {**settings.MONITORING, "ADMIN_COUNT_CAP": 5}
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(CHANGELIST, {"q": "app.mail"}).content.decode()
    assert "more than 5 job runs" in page
    # The count that decided it read the task-name branch alone, not the whole search condition.
    counts = [s for s in sql_of(queries) if s.startswith("SELECT COUNT(*)")]
    assert counts and "task_name" in counts[0] and "search_document" not in counts[0]

    settings.MONITORING = {**settings.MONITORING, "ADMIN_COUNT_CAP": 100}
    mail = sum(j.task_name == "app.mail" for j in jobs)
    page = admin_client_.get(CHANGELIST, {"q": "app.mail"}).content.decode()
    assert f"{mail} job runs" in page and "more than" not in page


def test_queue_and_task_filters_offer_the_known_values_and_filter(admin_client_, jobs):
    page = admin_client_.get(CHANGELIST, {"task_name": "app.report", "queue": "other"})
    expected = {j.task_id for j in jobs if j.task_name == "app.report" and j.queue == "other"}

    shown = {j.task_id for j in page.context["cl"].result_list}
    assert shown == expected
    filters = page.content.decode()
    assert "?queue=default" in filters and "task_name=app.mail" in filters


def test_search_matches_an_exact_task_id_or_a_task_name_prefix_without_like(admin_client_, jobs):
    target = jobs[7]
    assert [j.task_id for j in admin_client_.get(CHANGELIST, {"q": target.task_id}).context["cl"].result_list] == [
        target.task_id]

    with CaptureQueriesContext(connection) as queries:
        found = admin_client_.get(CHANGELIST, {"q": "app.rep"}).context["cl"].result_list
    assert {j.task_id for j in found} == {j.task_id for j in jobs if j.task_name == "app.report"}
    assert not [s for s in sql_of(queries) if " LIKE " in s.upper()]


def test_date_hierarchy_offers_periods_from_min_and_max_only(admin_client_, jobs):
    with CaptureQueriesContext(connection) as queries:
        page = admin_client_.get(CHANGELIST).content.decode()
    year = timezone.now().year
    assert f"created_at__year={year}" in page
    assert not [s for s in sql_of(queries) if "DATE_TRUNC" in s.upper() and "DISTINCT" in s.upper()]

    month = admin_client_.get(CHANGELIST, {"created_at__year": year, "created_at__month": timezone.now().month})
    assert len(month.context["cl"].result_list) == 30


def test_detail_page_shows_formatted_arguments_and_the_traceback(admin_client_, db):
    job = job_run(state=JobState.FAILURE, args=[1, "two"], kwargs={"to": "a@example.com"},
                  traceback="Traceback (most recent call last):\n  boom\nValueError: x")
    page = admin_client_.get(reverse("admin:monitoring_jobrun_change", args=[job.pk])).content.decode()

    assert '<pre class="jm-json">[\n  1,\n  &quot;two&quot;\n]</pre>' in page
    assert "&quot;to&quot;: &quot;a@example.com&quot;" in page
    assert "ValueError: x</pre>" in page


def read_csv(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_export_of_the_filtered_list_streams_every_matching_row(viewer_client, jobs):
    response = viewer_client.get(EXPORT, {"state__exact": "FAILURE", "queue": "other"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = read_csv(response)
    assert {r["task_id"] for r in rows} == {j.task_id for j in jobs if j.state == JobState.FAILURE
                                            and j.queue == "other"}
    assert {r["state"] for r in rows} == {"FAILURE"}


def test_export_is_capped(viewer_client, jobs, settings):
    settings.MONITORING = {**settings.MONITORING, "ADMIN_EXPORT_MAX_ROWS": 7}
    assert len(read_csv(viewer_client.get(EXPORT))) == 7


def test_export_of_the_selection(viewer_client, jobs):
    chosen = [jobs[0].pk, jobs[5].pk]
    response = viewer_client.post(CHANGELIST, {"action": "export_selected_csv", "_selected_action": chosen})
    assert {r["task_id"] for r in read_csv(response)} == {jobs[0].task_id, jobs[5].task_id}


def test_export_needs_the_view_permission(client, db, jobs):
    from tests.factories import user

    client.force_login(user())  # staff, no role
    assert client.get(EXPORT).status_code == 403


def test_viewer_gets_no_operator_actions(viewer_client, jobs):
    page = viewer_client.get(CHANGELIST)
    actions = [name for name, _ in page.context["action_form"].fields["action"].choices if name]
    assert actions == ["export_selected_csv"]


def test_job_runs_are_never_added_or_edited(admin_client_, jobs):
    assert admin_client_.get(reverse("admin:monitoring_jobrun_add")).status_code == 403
    before = JobRun.objects.get(pk=jobs[0].pk).state
    admin_client_.post(reverse("admin:monitoring_jobrun_change", args=[jobs[0].pk]), {"state": "LOST"})
    assert JobRun.objects.get(pk=jobs[0].pk).state == before


def test_rows_link_to_their_change_page_keeping_the_filters(admin_client_, jobs):
    page = admin_client_.get(CHANGELIST, {"state__exact": "FAILURE", "o": "-6"}).content.decode()
    failed = [job for job in jobs if job.state == JobState.FAILURE]
    for job in failed:
        change = reverse("admin:monitoring_jobrun_change", args=[job.pk])
        assert f'href="{change}?_changelist_filters=state__exact%3DFAILURE%26o%3D-6"' in page
    assert page.count('name="_selected_action"') == len(failed)
    unfiltered = admin_client_.get(CHANGELIST).content.decode()
    assert f'href="{reverse("admin:monitoring_jobrun_change", args=[jobs[0].pk])}"' in unfiltered


@pytest.mark.parametrize(("amount", "shown"), [
    ("0.0641037500", "$0.06410375"), ("0.0006087500", "$0.00060875"), ("1.5", "$1.50"), ("0E-10", "$0.00"),
    ("100", "$100.00"), ("-0.25", "-$0.25"), (None, "-"),
])
def test_amounts_are_shown_exactly_with_at_least_the_cents(amount, shown):
    from decimal import Decimal

    from monitoring.admin.base import money

    assert money(None if amount is None else Decimal(amount)) == shown


def test_batch_and_request_lists_show_exact_costs_and_compact_times(admin_client_, db, settings):
    from decimal import Decimal

    from batches.models import AIProcessingRequest, BatchJob, Company

    settings.TIME_ZONE = "UTC"
    company = Company.objects.create(name="Acme")
    created = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    job = BatchJob.objects.create(company=company, provider_batch_id="batch_abc", model="gpt-4o-mini",
                                  endpoint="/v1/chat/completions", cost=Decimal("0.0641037500"),
                                  savings=Decimal("0.0641037500"), created_at=created)
    BatchJob.objects.create(company=company, model="gpt-4o-mini", endpoint="/v1/chat/completions",
                            created_at=created)
    AIProcessingRequest.objects.create(company=company, job_type="sentiment", model="gpt-4o-mini", body={},
                                       custom_id="req-1", cost=Decimal("0.0006087500"), requested_at=created,
                                       batch=job)
    batches = admin_client_.get(reverse("admin:batches_batchjob_changelist")).content.decode()
    assert batches.count("$0.06410375") == 2 and "2026-03-04 05:06:07" in batches
    assert "batch_abc" in batches and "local batch" in batches
    requests = admin_client_.get(reverse("admin:batches_aiprocessingrequest_changelist")).content.decode()
    assert "$0.00060875" in requests and "2026-03-04 05:06:07" in requests
