"""Query parameters of the read endpoints, validated by serializers so a bad value is a 400 naming it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from .. import metrics


def to_utc(value: datetime, name: str) -> datetime:
    """Normalise a client's timestamp to UTC (PostgreSQL rejects odd offsets such as -23:01)."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise serializers.ValidationError({name: ["Out of range once converted to UTC (years 1-9999)."]}) from None


def choice_field(choices: tuple[str, ...] | list[str], **kwargs: Any) -> serializers.ChoiceField:
    """A choice field whose error lists the allowed values."""
    allowed = ", ".join(choices)
    return serializers.ChoiceField(choices=list(choices), error_messages={
        "invalid_choice": f'"{{input}}" is not a valid choice. Allowed values: {allowed}.'}, **kwargs)


def _datetime_field(help_text: str) -> serializers.DateTimeField:
    return serializers.DateTimeField(required=False, help_text=help_text, error_messages={
        "invalid": "Not an ISO 8601 timestamp. Use for example 2026-11-22T10:00:00Z."})


class RangeParams(serializers.Serializer):
    """A time range: ``range`` (relative to now) or ``since``/``until`` (ISO 8601)."""

    default_range = "24h"
    range = choice_field(tuple(metrics.RANGES), required=False,
                         help_text="Relative range ending now (default 24h). Not with since/until.")
    since = _datetime_field("Start of the range (ISO 8601, inclusive). Not with range.")
    until = _datetime_field("End of the range (ISO 8601, exclusive; default now). Not with range.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "range" in data and ("since" in data or "until" in data):
            raise serializers.ValidationError({"range": ["Give either range or since/until, not both."]})
        for name in ("since", "until"):
            if data.get(name) is not None:
                data[name] = to_utc(data[name], name)
        return data

    def window(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The validated ``(since, until)``."""
        now = now or timezone.now()
        data = self.validated_data
        if "since" not in data and "until" not in data:
            return metrics.range_window(data.get("range", self.default_range), now)
        until = data.get("until") or now
        try:
            since = data.get("since") or until - metrics.RANGES[self.default_range]
        except OverflowError:
            raise serializers.ValidationError({"until": ["Too early: give since as well."]}) from None
        if since >= until:
            raise serializers.ValidationError({"until": ["Must be later than since (and since not in the future)."]})
        return since, until


class TimelineParams(RangeParams):
    task_name = serializers.CharField(required=False, max_length=255, allow_blank=True,
                                      help_text="Only this task name (job type).")


class TrendParams(serializers.Serializer):
    period = choice_field(metrics.PERIODS, required=False, default="24h", help_text="Period ending now.")


class StuckParams(serializers.Serializer):
    threshold = serializers.IntegerField(
        required=False, min_value=1, max_value=10_000_000,
        help_text="Seconds a job must have been active to count as stuck (default MONITORING['STUCK_AFTER']).",
        error_messages={"invalid": "A whole number of seconds is required, e.g. 600."})
