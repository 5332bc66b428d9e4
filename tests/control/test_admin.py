"""Admin faces: confirmation pages state the count, actions are audited, viewers see no action."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring import capture
from monitoring.models import AuditEvent, BulkOperation, JobRun, JobState

from ..factories import job_run
from .conftest import purge, queue_length

IDLE = "ctl-admin-idle"
CHANGELIST = reverse("admin:monitoring_jobrun_changelist")


@pytest.fixture(autouse=True)
def idle_queue(settings):
    settings.MONITORING = {**settings.MONITORING, "KNOWN_QUEUES": [IDLE]}
    purge(IDLE)
    yield
    purge(IDLE)


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


def failed(n: int) -> list[JobRun]:
    return [job_run(state=JobState.FAILURE, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)
            for _ in range(n)]


def test_retry_action_confirms_the_count_then_retries(transactional_db, operator_client, broker):
    jobs = failed(3)
    job_run(state=JobState.SUCCESS, queue=IDLE)
    selected = [jobs[0].pk, jobs[1].pk]

    response = operator_client.post(CHANGELIST, {"action": "retry_selected", "_selected_action": selected})

    assert response.status_code == 302
    page = operator_client.get(response["Location"])
    assert "Retry 2 jobs?" in page.content.decode()
    assert queue_length(broker, IDLE) == 0  # nothing happens before confirmation

    done = operator_client.post(response["Location"], {"confirm": "yes"}, follow=True)

    assert "2/2 processed, 2 done" in done.content.decode()
    assert queue_length(broker, IDLE) == 2
    capture.flush()
    assert set(JobRun.objects.exclude(retry_of="").values_list("retry_of", flat=True)) == {
        jobs[0].task_id, jobs[1].task_id}
    event = AuditEvent.objects.get(action="bulk_retry")
    assert (event.source, event.outcome, event.client_address) == ("admin", "ok", "127.0.0.1")


def test_cancel_action_reports_skipped_jobs(transactional_db, operator_client):
    waiting = job_run(state=JobState.PENDING, queue=IDLE)
    finished = job_run(state=JobState.SUCCESS, queue=IDLE)

    response = operator_client.post(CHANGELIST, {"action": "cancel_selected",
                                                 "_selected_action": [waiting.pk, finished.pk]})
    page = operator_client.get(response["Location"]).content.decode()
    assert "Cancel 2 jobs?" in page and "1 of them are in a state this action applies to" in page
    done = operator_client.post(response["Location"], {"confirm": "yes"}, follow=True).content.decode()

    assert "1 done, 1 skipped" in done
    assert JobRun.objects.get(pk=waiting.pk).state == JobState.REVOKED


def test_detail_page_retry_button_with_changed_priority(transactional_db, operator_client, broker):
    job = failed(1)[0]
    change = operator_client.get(reverse("admin:monitoring_jobrun_change", args=[job.pk])).content.decode()
    retry_url = reverse("admin:monitoring_jobrun_retry", args=[job.pk])
    assert retry_url in change

    confirm = operator_client.get(retry_url).content.decode()
    assert "Retry 1 job" in confirm
    done = operator_client.post(retry_url, {"confirm": "yes", "priority": "6"}, follow=True).content.decode()

    assert "Job retried with ID" in done
    capture.flush()
    assert JobRun.objects.get(retry_of=job.task_id).priority == 6


def test_detail_page_refusal_is_reported(transactional_db, operator_client, broker):
    job = job_run(state=JobState.SUCCESS, task_name="tests.control.echo", args=[], kwargs={}, queue=IDLE)

    done = operator_client.post(reverse("admin:monitoring_jobrun_retry", args=[job.pk]), {"confirm": "yes"},
                                follow=True).content.decode()

    assert "rerun=true" in done
    assert queue_length(broker, IDLE) == 0


def test_viewers_see_no_actions_or_buttons_and_are_refused(transactional_db, viewer_client, broker):
    job = failed(1)[0]

    changelist = viewer_client.get(CHANGELIST).content.decode()
    change = viewer_client.get(reverse("admin:monitoring_jobrun_change", args=[job.pk])).content.decode()

    assert "retry_selected" not in changelist and "cancel_selected" not in changelist
    assert reverse("admin:monitoring_jobrun_retry", args=[job.pk]) not in change
    assert viewer_client.post(reverse("admin:monitoring_jobrun_retry", args=[job.pk]),
                              {"confirm": "yes"}).status_code == 403
    assert viewer_client.post(CHANGELIST, {"action": "retry_selected", "_selected_action": [job.pk]}).status_code \
        in (200, 302)
    assert not BulkOperation.objects.exists()
    assert queue_length(broker, IDLE) == 0


def test_audit_events_are_readable_but_not_editable(transactional_db, operator_client, superuser, client):
    failed(1)
    event = AuditEvent.objects.create(actor_name="x", source="api", action="retry", outcome="ok")
    client.force_login(superuser)

    assert client.get(reverse("admin:monitoring_auditevent_changelist")).status_code == 200
    page = client.get(reverse("admin:monitoring_auditevent_change", args=[event.pk])).content.decode()
    assert 'name="_save"' not in page
    assert client.get(reverse("admin:monitoring_auditevent_add")).status_code == 403
    assert client.post(reverse("admin:monitoring_auditevent_delete", args=[event.pk])).status_code == 403
