"""Serializers of the batches API (rendering and query-parameter validation)."""

from __future__ import annotations

from rest_framework import serializers

from .. import metrics, pricing
from ..models import AIProcessingRequest, BatchJob, BatchStatus


class CentsField(serializers.Field):
    """A stored exact amount rendered in cents (the exact value is in the matching ``exact_*`` field)."""

    def to_representation(self, value):
        return str(pricing.to_cents(value))


class BatchJobSerializer(serializers.ModelSerializer):
    company_name = serializers.CharField(source="company.name", read_only=True)
    cost = CentsField(read_only=True)
    sync_cost = CentsField(read_only=True)
    savings = CentsField(read_only=True)
    exact_cost = serializers.DecimalField(source="cost", max_digits=20, decimal_places=10, read_only=True)
    exact_sync_cost = serializers.DecimalField(source="sync_cost", max_digits=20, decimal_places=10, read_only=True)
    error_summary = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = ["id", "company", "company_name", "provider", "provider_batch_id", "status", "job_type", "endpoint",
                  "model", "input_file_id", "output_file_id", "error_file_id", "request_count", "completed_count",
                  "failed_count", "created_at", "submitted_at", "in_progress_at", "finalizing_at", "completed_at",
                  "failed_at", "expired_at", "cancelling_at", "cancelled_at", "expires_at", "results_processed_at",
                  "cost", "sync_cost", "savings", "exact_cost", "exact_sync_cost", "input_tokens", "output_tokens",
                  "error_summary", "provider_errors", "last_error", "provider_error_count", "status_history",
                  "metadata"]
        read_only_fields = fields

    def get_error_summary(self, job: BatchJob) -> list[dict]:
        return metrics.error_summary(job)


class AIProcessingRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = AIProcessingRequest
        fields = ["id", "company", "job_type", "model", "endpoint", "custom_id", "status", "attempts", "priority",
                  "batch", "body", "response_body", "error_code", "error_message", "input_tokens",
                  "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost", "sync_cost", "requested_at",
                  "next_attempt_at", "completed_at", "metadata"]
        read_only_fields = fields


class MonitoringQuerySerializer(serializers.Serializer):
    """The query parameters of ``batches/monitoring/``."""

    time_range = serializers.ChoiceField(choices=list(metrics.TIME_RANGES), default="24h", error_messages={
        "invalid_choice": f'"{{input}}" is not a time range; use one of: {", ".join(metrics.TIME_RANGES)}.'})
    status = serializers.ChoiceField(choices=BatchStatus.values, required=False, error_messages={
        "invalid_choice": f'"{{input}}" is not a batch status; use one of: {", ".join(BatchStatus.values)}.'})
    job_type = serializers.CharField(required=False, max_length=64)
    include_details = serializers.BooleanField(default=False)
    page = serializers.IntegerField(default=1, min_value=1)
    limit = serializers.IntegerField(default=50, min_value=1, max_value=100)
