"""Serializers of the read API: job records, and the documented shapes of the service results."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.db import models
from django.utils.functional import cached_property
from django.utils.http import RFC3986_SUBDELIMS
from rest_framework import serializers
from rest_framework.reverse import reverse

from ..models import JobRun

_TASK_ID = "__task_id__"


class _DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, looking the current time zone up once per serializer instead of once per value.

    A list serializer reuses one child (and so one field instance) for every row of a page, and
    ``timezone.get_current_timezone()`` goes through asgiref's context-local storage: with five timestamps
    per row it was a tenth of a 50-row page's serialization.
    """

    def default_timezone(self) -> Any:
        try:
            return self._default_timezone
        except AttributeError:
            self._default_timezone = super().default_timezone()
            return self._default_timezone


class JobRunSerializer(serializers.ModelSerializer):
    """One row of the jobs list."""

    serializer_field_mapping = {**serializers.ModelSerializer.serializer_field_mapping,
                                models.DateTimeField: _DateTimeField}
    url = serializers.SerializerMethodField()

    class Meta:
        model = JobRun
        fields = ("task_id", "url", "task_name", "origin", "queue", "state", "worker", "retries", "priority",
                  "args", "kwargs", "arguments_truncated", "exception_type", "exception_message", "created_at",
                  "published_at", "received_at", "started_at", "finished_at", "eta", "wait_time", "runtime")
        read_only_fields = fields

    @cached_property
    def _detail_url(self) -> str:
        # One reverse() per page instead of one per row (a quarter of a page's serialization): the child
        # serializer of a list, and so this property, lives for one response.
        return reverse("monitoring-api:job-detail", kwargs={"task_id": _TASK_ID}, request=self.context.get("request"))

    def get_url(self, job: JobRun) -> str:
        # Escaped as reverse() escapes a path argument.
        return self._detail_url.replace(_TASK_ID, quote(job.task_id, safe=RFC3986_SUBDELIMS + "/~:@"), 1)

    @cached_property
    def _readable(self) -> list[Any]:
        return list(self._readable_fields)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # ModelSerializer.to_representation without re-filtering the fields for every row: this serializer's
        # fields are plain model columns and one method field, none of which can skip itself or be a
        # related object, so each value is either None or its field's representation.
        ret: dict[str, Any] = {}
        for field in self._readable:
            attribute = field.get_attribute(instance)
            ret[field.field_name] = None if attribute is None else field.to_representation(attribute)
        return ret


class TransitionSerializer(serializers.Serializer):
    state = serializers.CharField()
    at = serializers.DateTimeField()


class RelatedJobSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    recorded = serializers.BooleanField(required=False)
    task_name = serializers.CharField(required=False)
    state = serializers.CharField(required=False)
    url = serializers.CharField(allow_null=True)


class JobRecordSerializer(JobRunSerializer):
    """Every column of a job record."""

    class Meta(JobRunSerializer.Meta):
        fields = (*JobRunSerializer.Meta.fields, "routing_key", "result", "traceback", "expires", "root_id",
                  "group_id", "parent_id", "updated_at")
        read_only_fields = fields


class JobDetailSerializer(JobRecordSerializer):
    """A job with its full record, ordered transitions and links to parent, children and retries."""

    transitions = TransitionSerializer(many=True, read_only=True)
    parent = RelatedJobSerializer(read_only=True, allow_null=True)
    retry_of = RelatedJobSerializer(read_only=True, allow_null=True)
    children = RelatedJobSerializer(many=True, read_only=True)
    retried_as = RelatedJobSerializer(many=True, read_only=True, help_text="Jobs an operator retried this as.")

    class Meta(JobRecordSerializer.Meta):
        fields = (*JobRecordSerializer.Meta.fields, "transitions", "parent", "retry_of", "children", "retried_as")
        read_only_fields = fields

    def to_representation(self, detail: dict[str, Any]) -> dict[str, Any]:
        request = self.context.get("request")
        data = JobRecordSerializer(detail["job"], context=self.context).data

        def link(task_id: str, recorded: bool = True) -> str | None:
            if not recorded:
                return None
            return reverse("monitoring-api:job-detail", kwargs={"task_id": task_id}, request=request)

        data["transitions"] = detail["transitions"]
        for key in ("parent", "retry_of"):
            related = detail[key]
            data[key] = {**related, "url": link(related["task_id"], related["recorded"])} if related else None
        data["children"] = [{**child, "url": link(child["task_id"])} for child in detail["children"]]
        data["retried_as"] = [{**retry, "url": link(retry["task_id"])} for retry in detail["retries"]]
        return data


# --- documented response shapes (the views return the services' dicts as they are) ------------------------

class BrokerStatusSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    transport = serializers.CharField()
    error = serializers.CharField(allow_blank=True)


class WorkersSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    online = serializers.IntegerField(allow_null=True, help_text="Workers that replied; null: broker unreachable.")
    names = serializers.ListField(child=serializers.CharField())
    checked_at = serializers.DateTimeField(allow_null=True)


class QueueCountsSerializer(serializers.Serializer):
    queue = serializers.CharField()
    waiting = serializers.IntegerField(allow_null=True, help_text="Messages in the broker; null: unavailable.")
    active = serializers.IntegerField()
    completed = serializers.IntegerField(help_text="Succeeded within window_seconds.")
    failed = serializers.IntegerField(help_text="Failed or lost within window_seconds.")
    delayed = serializers.IntegerField(help_text="Scheduled with an ETA in the future.")
    paused = serializers.BooleanField()


class TotalsSerializer(serializers.Serializer):
    waiting = serializers.IntegerField(allow_null=True)
    active = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    delayed = serializers.IntegerField()


class MetricsSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    window_seconds = serializers.IntegerField()
    queues = QueueCountsSerializer(many=True)
    totals = TotalsSerializer()
    success_rate = serializers.FloatField(allow_null=True, help_text="% over the last finished jobs.")
    success_rate_sample = serializers.IntegerField()
    processing_rate = serializers.FloatField(help_text="Jobs finished per minute over the recent window.")
    workers = WorkersSerializer()
    broker = BrokerStatusSerializer()


class ActiveJobSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    state = serializers.CharField()
    worker = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    running_seconds = serializers.FloatField(allow_null=True)
    retries = serializers.IntegerField()


class QueueMetricsSerializer(QueueCountsSerializer):
    timestamp = serializers.DateTimeField()
    broker = BrokerStatusSerializer()
    active_jobs = ActiveJobSerializer(many=True)


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    depth = serializers.IntegerField(allow_null=True)
    consumers = serializers.IntegerField(allow_null=True)
    workers = serializers.ListField(child=serializers.CharField())
    paused = serializers.BooleanField()
    paused_at = serializers.DateTimeField(allow_null=True)
    sources = serializers.ListField(child=serializers.CharField(),
                                    help_text="configured, consumed (by a worker), records, queue_state")


class QueueListSerializer(serializers.Serializer):
    timestamp = serializers.DateTimeField()
    broker = BrokerStatusSerializer()
    workers_available = serializers.BooleanField()
    queues = QueueSerializer(many=True)


class SeriesPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()
    total = serializers.IntegerField()


class FiguresSerializer(serializers.Serializer):
    successful = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Failed or lost (worker died).")
    revoked = serializers.IntegerField()
    total = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True, help_text="% of successful among successful + failed.")
    avg_processing_time = serializers.FloatField(allow_null=True, help_text="Seconds.")
    p50_processing_time = serializers.FloatField(allow_null=True, help_text="Seconds (from the runtime histogram).")
    p95_processing_time = serializers.FloatField(allow_null=True, help_text="Seconds (from the runtime histogram).")


class QueueTrendSerializer(FiguresSerializer):
    queue = serializers.CharField()
    period = serializers.CharField()
    series = SeriesPointSerializer(many=True)


class TaskTrendSerializer(FiguresSerializer):
    task_name = serializers.CharField()
    period = serializers.CharField()
    series = SeriesPointSerializer(many=True)


class TrendsSerializer(serializers.Serializer):
    period = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    step_seconds = serializers.IntegerField()
    totals = FiguresSerializer()
    queues = QueueTrendSerializer(many=True)
    tasks = TaskTrendSerializer(many=True)


class JobTypeStatsSerializer(serializers.Serializer):
    task_name = serializers.CharField()
    total_runs = serializers.IntegerField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    average_duration = serializers.FloatField(allow_null=True)
    p95_duration = serializers.FloatField(allow_null=True, help_text="Estimated from the runtime histogram.")
    running = serializers.IntegerField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    last_state = serializers.CharField(allow_null=True)
    current_status = serializers.CharField(allow_null=True)


class StatsSummarySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    average_duration = serializers.FloatField(allow_null=True)
    running = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    summary = StatsSummarySerializer()
    job_types = JobTypeStatsSerializer(many=True)


class BarSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    queue = serializers.CharField()
    status = serializers.CharField(help_text="running, or the final state")
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(allow_null=True)
    duration = serializers.FloatField()


class TimelineSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    task_name = serializers.CharField(allow_null=True)
    truncated = serializers.BooleanField()
    bars = BarSerializer(many=True)


class OverlapGroupSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    duration = serializers.FloatField()
    overlap_seconds = serializers.FloatField(help_text="Seconds during which two or more of the jobs ran.")
    max_concurrency = serializers.IntegerField()
    jobs = BarSerializer(many=True)


class OverlapsSerializer(serializers.Serializer):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    truncated = serializers.BooleanField()
    groups = OverlapGroupSerializer(many=True)


class StuckJobSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    task_name = serializers.CharField()
    queue = serializers.CharField()
    state = serializers.CharField()
    worker = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    stuck_seconds = serializers.FloatField()
    severity = serializers.ChoiceField(choices=["low", "medium", "high", "critical"])
    args = serializers.JSONField(allow_null=True)
    kwargs = serializers.JSONField(allow_null=True)
    retries = serializers.IntegerField()


class ErrorGroupSerializer(serializers.Serializer):
    exception_type = serializers.CharField()
    message = serializers.CharField(help_text="Normalised message (ids, numbers, quoted values masked).")
    example = serializers.CharField(allow_null=True)
    count = serializers.IntegerField()
    first_seen = serializers.DateTimeField(allow_null=True)
    last_seen = serializers.DateTimeField(allow_null=True)
    task_names = serializers.ListField(child=serializers.CharField())
    queues = serializers.ListField(child=serializers.CharField())


class HealthCheckSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "down", "unknown"])
    detail = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    timestamp = serializers.DateTimeField()
    checks = serializers.DictField(child=HealthCheckSerializer())
