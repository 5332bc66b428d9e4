"""The alert API: rules (operators change, viewers read; bad input is a 400 naming the field) and alerts."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from monitoring import alerts
from monitoring.api.live import live_metrics
from monitoring.models import Alert, AlertRule, AlertState, AuditEvent, JobState
from tests.factories import job_run

from .conftest import MINUTE, NOW, make_rule

RULES = "/api/v1/alert-rules/"
ALERTS = "/api/v1/alerts/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def operator_api(operator) -> APIClient:
    return client_for(operator)


@pytest.fixture
def viewer_api(viewer) -> APIClient:
    return client_for(viewer)


VALID = {"name": "Emails failing", "metric": "error_rate", "scope": "queue", "scope_value": "emails",
         "threshold": 5, "window": 1_800, "severity": "critical", "cooldown": 600,
         "channels": [{"type": "email", "to": ["ops@example.com"]},
                      {"type": "webhook", "url": "https://hooks.example.com/x", "format": "slack"}]}


# --- rules ----------------------------------------------------------------------------------------------------

def test_default_rules_exist_on_a_new_install(db):
    rules = {r.name: (r.metric, r.threshold, r.severity, r.scope, r.enabled, r.min_samples)
             for r in AlertRule.objects.all()}
    assert rules == {
        # A rate needs enough jobs to mean something: 20 decided jobs in the hour.
        "High error rate": ("error_rate", 10, "high", "all", True, 20),
        "Long processing time": ("avg_processing_time", 3_600, "medium", "all", True, 0),
        "Low throughput": ("throughput", 0.5, "medium", "all", True, 0),
        "Batch failed": ("batch_failed", 1, "critical", "all", True, 0),
        "Jobs stuck over 30 minutes": ("stuck_jobs", 1_800, "medium", "all", True, 0),
    }


def test_operator_creates_changes_and_deletes_a_rule_and_each_change_is_audited(operator_api):
    created = operator_api.post(RULES, VALID, format="json")
    assert created.status_code == 201, created.json()
    rule = AlertRule.objects.get(pk=created.json()["id"])
    assert (rule.metric, rule.scope_value, rule.threshold, rule.channels) == (
        "error_rate", "emails", 5, VALID["channels"])

    assert created.json()["min_samples"] == 0  # the field's default

    changed = operator_api.patch(f"{RULES}{rule.pk}/", {"threshold": 20, "enabled": False, "min_samples": 50},
                                 format="json")
    assert changed.status_code == 200 and changed.json()["threshold"] == 20 and not changed.json()["enabled"]
    rule.refresh_from_db()
    assert rule.min_samples == 50

    assert operator_api.delete(f"{RULES}{rule.pk}/").status_code == 204
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert list(AuditEvent.objects.filter(action__startswith="alert_rule.").order_by("id")
                .values_list("action", flat=True)) == ["alert_rule.create", "alert_rule.update", "alert_rule.delete"]


def test_viewer_reads_rules_but_cannot_change_them(viewer_api):
    listed = viewer_api.get(RULES)
    assert listed.status_code == 200 and listed.json()["count"] == AlertRule.objects.count()
    assert viewer_api.post(RULES, VALID, format="json").status_code == 403
    rule = AlertRule.objects.first()
    assert viewer_api.patch(f"{RULES}{rule.pk}/", {"threshold": 1}, format="json").status_code == 403
    assert viewer_api.delete(f"{RULES}{rule.pk}/").status_code == 403


def test_a_user_without_a_role_is_refused(db):
    from tests.factories import user

    assert client_for(user()).get(RULES).status_code == 403


@pytest.mark.parametrize(("change", "field", "mentions"), [
    ({"metric": "cpu_load"}, "metric", ["error_rate", "batch_failed", "no_workers_online"]),
    ({"threshold": -1}, "threshold", ["0 or more"]),
    ({"threshold": "lots"}, "threshold", ["number"]),
    ({"metric": "success_rate", "threshold": 150}, "threshold", ["at most 100"]),
    ({"scope": "galaxy"}, "scope", ["all", "queue", "task_name", "job_type", "company"]),
    ({"metric": "batch_failed"}, "scope", ["all, job_type, company"]),
    ({"scope": "queue", "scope_value": ""}, "scope_value", ["Required"]),
    ({"scope": "company", "metric": "batch_failed", "scope_value": "999999"}, "scope_value", ["No company"]),
    ({"scope": "company", "metric": "batch_failed", "scope_value": "9" * 30}, "scope_value", ["No company"]),
    ({"window": 5}, "window", ["60"]),
    ({"min_samples": -1}, "min_samples", ["0 to 1,000,000"]),
    ({"min_samples": "many"}, "min_samples", ["integer"]),
    ({"metric": "queue_depth", "scope": "all", "min_samples": 10}, "min_samples",
     ["queue_depth", "error_rate", "success_rate", "p95_processing_time", "batch_error_rate"]),
    ({"severity": "apocalyptic"}, "severity", ["low, medium, high, critical"]),
    ({"channels": [{"type": "pager"}]}, "channels", ["email, webhook"]),
    ({"channels": [{"type": "email", "to": ["not-an-address"]}]}, "channels", ["not-an-address"]),
    ({"channels": [{"type": "webhook", "url": "ftp://x"}]}, "channels", ["http(s) URL"]),
    ({"channels": [{"type": "webhook", "url": "https://x.example.com/a\x00b"}]}, "channels", ["NUL"]),
    ({"channels": [{"type": "webhook", "url": "https://x.example.com", "format": "xml"}]}, "channels", ["json, slack"]),
])
def test_bad_rule_input_is_a_400_naming_the_field_and_changes_nothing(operator_api, change, field, mentions):
    before = AlertRule.objects.count()
    response = operator_api.post(RULES, {**VALID, **change}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    text = " ".join(errors[field])
    for word in mentions:
        assert word in text
    assert AlertRule.objects.count() == before and not AuditEvent.objects.exists()


def test_a_partial_update_is_checked_against_the_rest_of_the_rule(operator_api):
    rule = make_rule(metric="batch_failed", threshold=1)
    response = operator_api.patch(f"{RULES}{rule.pk}/", {"scope": "queue", "scope_value": "emails"}, format="json")
    assert response.status_code == 400 and "scope" in response.json()
    rule.refresh_from_db()
    assert rule.scope == "all"


def test_unknown_rule_is_404(operator_api):
    assert operator_api.get(f"{RULES}999999/").status_code == 404


# --- alerts ---------------------------------------------------------------------------------------------------

@pytest.fixture
def firing(only_test_rules) -> dict[str, Alert]:
    """A high error-rate alert and a medium stuck-jobs alert, both firing."""
    errors = make_rule(name="errors", metric="error_rate", threshold=10, severity="high")
    stuck = make_rule(name="stuck", metric="stuck_jobs", threshold=1_800, severity="medium")
    for index in range(3):
        job_run(state=JobState.FAILURE, created_at=NOW - (10 + index) * MINUTE)
    job_run(state=JobState.STARTED, created_at=NOW - 45 * MINUTE)
    alerts.evaluate(now=NOW)
    return {"errors": Alert.objects.get(rule=errors), "stuck": Alert.objects.get(rule=stuck)}


def test_alerts_are_listed_newest_first_and_filtered(viewer_api, firing, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):  # session/user, count, page, deliveries: no query per alert
        listed = viewer_api.get(ALERTS)
    assert listed.status_code == 200 and listed.json()["count"] == 2
    high = viewer_api.get(ALERTS, {"severity": "high"}).json()["results"]
    assert [a["id"] for a in high] == [firing["errors"].pk]
    by_rule = viewer_api.get(ALERTS, {"rule": firing["stuck"].rule_id}).json()["results"]
    assert [a["id"] for a in by_rule] == [firing["stuck"].pk]
    assert viewer_api.get(ALERTS, {"state": "resolved"}).json()["count"] == 0


def test_a_bad_filter_is_a_400_listing_the_allowed_values(viewer_api, firing):
    response = viewer_api.get(ALERTS, {"state": "exploded"})
    assert response.status_code == 400
    assert "firing, acknowledged, resolved" in response.json()["state"][0]


def test_operator_acknowledges_then_resolves_an_alert(operator_api, operator, firing):
    alert = firing["errors"]
    acked = operator_api.post(f"{ALERTS}{alert.pk}/acknowledge/", {"comment": "on it"}, format="json")
    assert acked.status_code == 200
    body = acked.json()
    assert body["state"] == "acknowledged" and body["acknowledged_by_name"] == operator.username
    assert body["acknowledge_comment"] == "on it" and body["acknowledged_at"]

    again = operator_api.post(f"{ALERTS}{alert.pk}/acknowledge/", {}, format="json")
    assert again.status_code == 409 and operator.username in again.json()["detail"]

    resolved = operator_api.post(f"{ALERTS}{alert.pk}/resolve/", {"comment": "fixed the SMTP relay"}, format="json")
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    assert resolved.json()["resolved_by_name"] == operator.username
    assert operator_api.post(f"{ALERTS}{alert.pk}/resolve/", {}, format="json").status_code == 409
    assert list(AuditEvent.objects.filter(action__startswith="alert.").values_list("action", flat=True)
                .order_by("id")) == ["alert.acknowledge", "alert.resolve"]


def test_acting_on_an_unknown_alert_is_404_and_viewers_cannot_act(operator_api, viewer_api, firing):
    assert operator_api.post(f"{ALERTS}999999/acknowledge/", {}, format="json").status_code == 404
    assert viewer_api.post(f"{ALERTS}{firing['errors'].pk}/acknowledge/", {}, format="json").status_code == 403
    firing["errors"].refresh_from_db()
    assert firing["errors"].state == AlertState.FIRING


def test_open_alerts_for_dashboards_and_the_live_stream_put_the_most_severe_first(firing):
    summary = alerts.open_alerts()
    assert summary["count"] == 2 and summary["by_severity"] == {"critical": 0, "high": 1, "medium": 1, "low": 0}
    assert [a["id"] for a in summary["alerts"]] == [firing["errors"].pk, firing["stuck"].pk]
    snapshot = live_metrics()
    assert snapshot["alerts"]["count"] == 2 and "queues" in snapshot


def test_the_rule_list_shows_how_many_alerts_are_open(viewer_api, firing):
    rules = {r["name"]: r["open_alerts"] for r in viewer_api.get(RULES).json()["results"]}
    assert rules == {"errors": 1, "stuck": 1}
