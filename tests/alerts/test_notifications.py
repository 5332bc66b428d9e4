"""Notifications: a webhook on a loopback server (delivered, retried, unreachable), email, cooldown."""

from __future__ import annotations

import pytest

from monitoring import alerts
from monitoring.models import Alert, AlertDelivery, AlertState, DeliveryStatus, JobRun, JobState
from tests.factories import job_run, wait_until

from .conftest import HOUR, MINUTE, NOW, make_rule

pytestmark = pytest.mark.usefixtures("only_test_rules")


def stuck_job(at):
    """A job started 45 minutes before ``at``: a breach of a 30-minute stuck-jobs rule."""
    return job_run(state=JobState.STARTED, created_at=at - 45 * MINUTE, wait_time=0)


def finish(job: JobRun, at) -> None:
    JobRun.objects.filter(pk=job.pk).update(state=JobState.SUCCESS, finished_at=at)


@pytest.fixture
def fast_retries(settings):
    settings.MONITORING = {"FLUSH_INTERVAL": 0.2, "ALERT_DELIVERY_BACKOFF": 0.2, "ALERT_DELIVERY_ATTEMPTS": 4,
                           "ALERT_DELIVERY_TIMEOUT": 2.0}


@pytest.mark.worker
def test_webhook_is_delivered_by_the_worker_to_a_local_server(celery_worker, webhook, fast_retries):
    rule = make_rule(name="Stuck", metric="stuck_jobs", threshold=1_800, severity="medium",
                     channels=[{"type": "webhook", "url": webhook.url}])
    stuck = stuck_job(NOW)
    alerts.evaluate(now=NOW)

    delivery = wait_until(lambda: AlertDelivery.objects.filter(status=DeliveryStatus.SENT).first())
    alert = Alert.objects.get(rule=rule)
    assert delivery.alert == alert and delivery.attempts == 1 and delivery.event == AlertState.FIRING
    assert len(webhook.received) == 1 and webhook.headers[0]["Content-Type"] == "application/json"
    body = webhook.received[0]
    assert body["event"] == "firing"
    assert body["alert"]["id"] == alert.pk and body["alert"]["severity"] == "medium"
    assert body["alert"]["details"]["longest"][0]["task_id"] == stuck.task_id

    finish(stuck, NOW + MINUTE)
    alerts.evaluate(now=NOW + 2 * MINUTE)  # the condition cleared: the resolution is announced too
    wait_until(lambda: len(webhook.received) == 2)
    assert webhook.received[1]["event"] == "resolved" and webhook.received[1]["alert"]["state"] == "resolved"


@pytest.mark.worker
def test_a_failing_webhook_is_retried_with_backoff_until_it_answers(celery_worker, webhook, fast_retries):
    webhook.answers = [500, 503]
    make_rule(metric="stuck_jobs", threshold=1_800, channels=[{"type": "webhook", "url": webhook.url,
                                                                "format": "slack"}])
    stuck_job(NOW)
    alerts.evaluate(now=NOW)

    delivery = wait_until(lambda: AlertDelivery.objects.filter(status=DeliveryStatus.SENT).first(), timeout=20)
    assert delivery.attempts == 3 and len(webhook.received) == 3
    assert "HTTP 503" in delivery.last_error  # the last failure stays on the record
    slack = webhook.received[-1]
    assert slack["text"].startswith("[HIGH] stuck_jobs: Longest stuck job") and slack["blocks"][0]["type"] == "section"


def test_an_unreachable_webhook_is_an_error_on_the_delivery_not_an_exception(closed_port_url, settings):
    settings.MONITORING = {"ALERT_DELIVERY_ATTEMPTS": 2, "ALERT_DELIVERY_TIMEOUT": 1.0}
    rule = make_rule(metric="stuck_jobs", threshold=1_800, channels=[{"type": "webhook", "url": closed_port_url}])
    stuck_job(NOW)
    report = alerts.evaluate(now=NOW)  # queues the delivery; sending happens elsewhere
    assert report.fired and not report.errors
    delivery = AlertDelivery.objects.get(alert__rule=rule)

    first = alerts.attempt_delivery(delivery.pk, now=NOW)
    assert first.status == DeliveryStatus.PENDING and first.last_error.startswith("Unreachable:")
    second = alerts.attempt_delivery(delivery.pk, now=NOW + MINUTE)
    delivery.refresh_from_db()
    assert second.status == delivery.status == DeliveryStatus.FAILED and delivery.attempts == 2
    assert "Unreachable" in delivery.last_error
    assert alerts.attempt_delivery(delivery.pk) is None  # a finished delivery is not attempted again


def test_a_webhook_slower_than_the_timeout_fails_the_attempt(webhook, settings):
    settings.MONITORING = {"ALERT_DELIVERY_TIMEOUT": 0.3}
    webhook.delay = 1.0
    rule = make_rule(metric="stuck_jobs", threshold=1_800, channels=[{"type": "webhook", "url": webhook.url}])
    stuck_job(NOW)
    alerts.evaluate(now=NOW)
    delivery = alerts.attempt_delivery(AlertDelivery.objects.get(alert__rule=rule).pk)
    assert delivery.status == DeliveryStatus.PENDING and "timed out" in delivery.last_error


def test_email_goes_through_django_mail(mailoutbox, settings):
    settings.DEFAULT_FROM_EMAIL = "monitor@example.com"
    rule = make_rule(name="Too many errors", metric="stuck_jobs", threshold=1_800, severity="critical",
                     channels=[{"type": "email", "to": ["ops@example.com", "oncall@example.com"]}])
    stuck_job(NOW)
    alerts.evaluate(now=NOW)
    delivery = alerts.attempt_delivery(AlertDelivery.objects.get(alert__rule=rule).pk, now=NOW)

    assert delivery.status == DeliveryStatus.SENT and delivery.sent_at == NOW
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com", "oncall@example.com"] and mail.from_email == "monitor@example.com"
    assert mail.subject == "[jobmonitor] Critical: Too many errors (all)"
    assert Alert.objects.get(rule=rule).message in mail.body


def test_cooldown_suppresses_notifications_of_a_flapping_condition():
    rule = make_rule(metric="stuck_jobs", threshold=1_800, cooldown=1_800,
                     channels=[{"type": "webhook", "url": "http://127.0.0.1:9/hook"}])
    first = stuck_job(NOW)
    alerts.evaluate(now=NOW)
    finish(first, NOW + 5 * MINUTE)
    alerts.evaluate(now=NOW + 5 * MINUTE)  # resolved at +5 min

    second = stuck_job(NOW + 15 * MINUTE)
    alerts.evaluate(now=NOW + 15 * MINUTE)  # 10 minutes after the resolution: inside the cooldown
    finish(second, NOW + 20 * MINUTE)
    alerts.evaluate(now=NOW + 20 * MINUTE)

    stuck_job(NOW + HOUR)
    alerts.evaluate(now=NOW + HOUR)  # 40 minutes after the last resolution: notified again

    history = list(Alert.objects.filter(rule=rule).order_by("fired_at"))
    assert [a.notified_at for a in history] == [NOW, None, NOW + HOUR]
    events = [(d.alert_id, d.event) for d in AlertDelivery.objects.order_by("id")]
    # The suppressed alert announced neither its firing nor its resolution.
    assert events == [(history[0].pk, "firing"), (history[0].pk, "resolved"), (history[2].pk, "firing")]


def test_a_rule_without_channels_still_opens_alerts_but_sends_nothing():
    rule = make_rule(metric="stuck_jobs", threshold=1_800)
    stuck_job(NOW)
    alerts.evaluate(now=NOW)
    assert Alert.objects.get(rule=rule).notified_at is None and not AlertDelivery.objects.exists()


def test_backoff_doubles_per_failed_attempt(settings):
    settings.MONITORING = {"ALERT_DELIVERY_BACKOFF": 30}
    assert [alerts.backoff(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
