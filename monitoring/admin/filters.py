"""Changelist filters whose choices never come from ``SELECT DISTINCT`` over the job table."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import metrics


class IndexedValueFilter(admin.SimpleListFilter):
    """Exact match on an indexed column; choices from an index-hopping loose scan (``metrics.distinct_values``)."""

    column = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in metrics.distinct_values(self.column, limit=200)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.column: value}) if value else queryset


class QueueFilter(IndexedValueFilter):
    title = _("queue")
    parameter_name = "queue"
    column = "queue"


class TaskNameFilter(IndexedValueFilter):
    title = _("task name")
    parameter_name = "task_name"
    column = "task_name"


class RecentFilter(admin.SimpleListFilter):
    """First seen within the last hour, day, week or month (a range on the created-at index)."""

    title = _("first seen")
    parameter_name = "recent"
    spans = {"1h": (timedelta(hours=1), _("Last hour")), "24h": (timedelta(hours=24), _("Last 24 hours")),
             "7d": (timedelta(days=7), _("Last 7 days")), "30d": (timedelta(days=30), _("Last 30 days"))}
    field = "created_at"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [(key, label) for key, (_span, label) in self.spans.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        span = self.spans.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(**{f"{self.field}__gte": timezone.now() - span[0]})
