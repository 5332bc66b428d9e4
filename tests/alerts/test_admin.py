"""Admin: operators edit rules through the same validation; alerts are read-only with acknowledge/resolve actions."""

from __future__ import annotations

import pytest
from django.urls import reverse

from monitoring import alerts
from monitoring.models import Alert, AlertRule, AlertState, AuditEvent, JobState
from tests.factories import job_run

from .conftest import MINUTE, NOW, make_rule

FORM = {"name": "Reports slow", "metric": "p95_processing_time", "scope": "queue", "scope_value": "reports",
        "threshold": "120", "window": "3600", "min_samples": "10", "severity": "high", "channels": "[]",
        "cooldown": "900", "notify_resolved": "on", "enabled": "on"}


def test_operator_adds_a_rule_in_the_admin(client, operator):
    client.force_login(operator)
    page = client.get(reverse("admin:monitoring_alertrule_add"))
    assert page.status_code == 200 and b"batch_failed" in page.content  # batch metrics come from the registry
    response = client.post(reverse("admin:monitoring_alertrule_add"), FORM)
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = AlertRule.objects.get(name="Reports slow")
    assert (rule.metric, rule.scope_value, rule.threshold, rule.min_samples) == (
        "p95_processing_time", "reports", 120, 10)
    assert AuditEvent.objects.filter(action="alert_rule.create", source="admin").exists()


@pytest.mark.parametrize(("metric", "field"), [
    ("batch_failed", "scope"),  # a batch metric does not take the form's queue scope
    ("queue_depth", "min_samples"),  # a depth has no samples to count
])
def test_the_admin_form_refuses_what_the_metric_does_not_take(client, operator, metric, field):
    client.force_login(operator)
    response = client.post(reverse("admin:monitoring_alertrule_add"), {**FORM, "metric": metric})
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not AlertRule.objects.filter(name="Reports slow").exists()


def test_viewer_sees_rules_but_cannot_add_them(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("admin:monitoring_alertrule_changelist")).status_code == 200
    assert client.get(reverse("admin:monitoring_alertrule_add")).status_code == 403


def test_acknowledge_action_on_the_alert_changelist(client, operator, only_test_rules):
    make_rule(metric="error_rate", threshold=10)
    job_run(state=JobState.FAILURE, created_at=NOW - 5 * MINUTE)
    alerts.evaluate(now=NOW)
    alert = Alert.objects.get()
    client.force_login(operator)
    changelist = reverse("admin:monitoring_alert_changelist")
    assert client.get(changelist).status_code == 200
    assert client.get(reverse("admin:monitoring_alert_change", args=[alert.pk])).status_code == 200
    response = client.post(changelist, {"action": "acknowledge_selected", "_selected_action": [alert.pk]},
                           follow=True)
    assert response.status_code == 200
    alert.refresh_from_db()
    assert alert.state == AlertState.ACKNOWLEDGED and alert.acknowledged_by == operator


def test_viewer_has_no_alert_actions(client, viewer, only_test_rules):
    client.force_login(viewer)
    response = client.get(reverse("admin:monitoring_alert_changelist"))
    assert response.status_code == 200 and b"acknowledge_selected" not in response.content


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_both_roles_may_view_alerts_and_deliveries(db, role, request):
    user = request.getfixturevalue(role)
    assert all(user.has_perm(f"monitoring.view_{name}") for name in ("alertrule", "alert", "alertdelivery"))
    assert user.has_perm("monitoring.operate_alert") == (role == "operator")
    assert user.has_perm("monitoring.change_alertrule") == (role == "operator")
