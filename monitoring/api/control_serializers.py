"""Request documentation and response shapes of the control API (validation lives in ``control.py``)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from .. import control
from ..models import AuditEvent, BulkOperation


class BackoffSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["fixed", "exponential"], default="fixed")
    delay = serializers.FloatField(help_text="Seconds before the first retry.")
    max_delay = serializers.FloatField(required=False, help_text="Cap of an exponential delay, in seconds.")


class RetryRequestSerializer(serializers.Serializer):
    """Retry overrides; every field is optional and unknown fields are refused."""

    priority = serializers.IntegerField(required=False, min_value=0, max_value=control.MAX_PRIORITY)
    queue = serializers.CharField(required=False)
    countdown = serializers.FloatField(required=False, min_value=0)
    eta = serializers.DateTimeField(required=False)
    max_retries = serializers.IntegerField(required=False, min_value=0, max_value=control.MAX_MAX_RETRIES,
                                           help_text="Honoured by OperatorRetryPolicy tasks.")
    backoff = BackoffSerializer(required=False,
                                help_text="Honoured by OperatorRetryPolicy tasks.")
    args = serializers.ListField(required=False, help_text="Replaces the stored positional arguments.")
    kwargs = serializers.DictField(required=False, help_text="Merged over the stored keyword arguments.")
    remove_original = serializers.BooleanField(required=False, default=False)
    rerun = serializers.BooleanField(required=False, default=False, help_text="Allow retrying a SUCCESS job.")
    idempotency_key = serializers.CharField(required=False, max_length=200,
                                            help_text="Or the Idempotency-Key header.")


class RetryResultSerializer(serializers.Serializer):
    success = serializers.BooleanField(default=True)
    original_task_id = serializers.CharField()
    new_task_id = serializers.CharField()
    task_name = serializers.CharField()
    queue = serializers.CharField()
    options = serializers.DictField()
    removed_original = serializers.BooleanField()
    duplicate = serializers.BooleanField()
    message = serializers.CharField()


class CancelRequestSerializer(serializers.Serializer):
    signal = serializers.ChoiceField(choices=control.TERMINATE_SIGNALS, default="SIGTERM", required=False)


class CancelResultSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["revoked", "terminated"])
    worker = serializers.CharField()
    message = serializers.CharField()


class BulkRequestSerializer(serializers.Serializer):
    """Either ``operation`` (confirm a preview) or ``action`` with ``ids`` or ``filter``."""

    action = serializers.ChoiceField(choices=control.BULK_ACTIONS, required=False)
    ids = serializers.ListField(child=serializers.CharField(), required=False)
    filter = serializers.DictField(required=False, help_text=f"Keys: {', '.join(control.BULK_FILTERS)}.")
    parameters = serializers.DictField(required=False, help_text="Retry overrides, or {signal} for cancel.")
    preview = serializers.BooleanField(required=False, default=False)
    operation = serializers.IntegerField(required=False, help_text="Id of a preview to act on.")


class BulkOperationSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True)
    url = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()
    task_ids_sample = serializers.SerializerMethodField()

    class Meta:
        model = BulkOperation
        fields = ["id", "url", "action", "status", "summary", "parameters", "selection", "total", "processed",
                  "succeeded", "skipped", "failed", "progress", "problems", "new_task_ids", "task_ids_sample",
                  "background_task_id", "created_by_name", "source", "created_at", "started_at", "finished_at"]

    def get_url(self, obj: BulkOperation) -> str:
        return reverse("monitoring-control:bulk-detail", args=[obj.pk])

    def get_summary(self, obj: BulkOperation) -> str:
        return control.bulk_summary(obj)

    def get_task_ids_sample(self, obj: BulkOperation) -> list[str]:
        return obj.task_ids[:20]

    def to_representation(self, instance: BulkOperation) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["count"] = instance.total
        if instance.status == "preview":
            data["eligible"] = control.eligible_count(instance)
        return data


class QueueResultSerializer(serializers.Serializer):
    queue = serializers.CharField()
    paused = serializers.BooleanField()
    workers = serializers.ListField(child=serializers.CharField())
    message = serializers.CharField()


class PurgeResultSerializer(serializers.Serializer):
    queue = serializers.CharField()
    purged = serializers.IntegerField()
    records_revoked = serializers.IntegerField()
    message = serializers.CharField()


class ClearResultSerializer(serializers.Serializer):
    queue = serializers.CharField()
    type = serializers.CharField()
    older_than = serializers.DateTimeField(allow_null=True)
    deleted = serializers.IntegerField()
    dry_run = serializers.BooleanField()
    message = serializers.CharField()


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor", "actor_name", "source", "client_address", "action", "targets",
                  "parameters", "outcome", "detail", "new_task_ids"]
        read_only_fields = fields
