"""Alert rules, alerts and their deliveries over the API (validation lives in ``monitoring.alerts``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .. import alerts
from ..models import Alert, AlertDelivery, AlertRule, AlertSeverity
from .params import choice_field


class AlertRuleSerializer(serializers.ModelSerializer):
    """A rule; metric, scope, threshold, window and channels are checked against the alert registry."""

    metric = serializers.CharField(max_length=64, help_text="A registered metric, e.g. error_rate, "
                                                            "p95_processing_time, throughput, batch_failed.")
    scope = serializers.CharField(max_length=32, required=False, default="all",
                                  help_text="all, queue, task_name, job_type or company (as the metric allows).")
    severity = choice_field(AlertSeverity.values, required=False, default=AlertSeverity.MEDIUM)
    channels = serializers.JSONField(required=False, default=list, help_text=AlertRule._meta.get_field(
        "channels").help_text)
    threshold = serializers.FloatField(help_text=str(AlertRule._meta.get_field("threshold").help_text))
    window = serializers.IntegerField(required=False, default=3_600, help_text="Seconds (60 to 2592000).")
    min_samples = serializers.IntegerField(required=False, default=0, help_text=str(AlertRule._meta.get_field(
        "min_samples").help_text))
    cooldown = serializers.IntegerField(required=False, default=900, min_value=0, max_value=30 * 86_400,
                                        help_text="Seconds without a new notification for this rule and scope.")
    open_alerts = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = ["id", "name", "metric", "scope", "scope_value", "threshold", "window", "min_samples", "severity",
                  "channels", "cooldown", "notify_resolved", "enabled", "open_alerts", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def get_open_alerts(self, rule: AlertRule) -> int:
        return getattr(rule, "open_alert_count", 0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        current = {name: getattr(self.instance, name) for name in alerts.RULE_FIELDS} if self.instance else {}
        errors = alerts.rule_errors({**current, **attrs})
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class AlertDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertDelivery
        fields = ["id", "event", "channel_type", "channel", "status", "attempts", "last_error", "created_at",
                  "last_attempt_at", "sent_at"]


class AlertSerializer(serializers.ModelSerializer):
    scope = serializers.CharField(source="scope_key")
    deliveries = AlertDeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Alert
        fields = ["id", "rule", "rule_name", "metric", "scope", "severity", "state", "threshold", "value",
                  "last_value", "message", "details", "fired_at", "last_evaluated_at", "notified_at",
                  "acknowledged_at", "acknowledged_by_name", "acknowledge_comment", "resolved_at",
                  "resolved_by_name", "resolve_comment", "deliveries"]


class AlertActionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2_000)
