"""The jobs list's filters (django-filter), each backed by an indexed path."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.utils import timezone

from .. import metrics
from ..models import JobRun, JobState
from .params import to_utc

ORDERINGS = ("created_at", "started_at", "finished_at")
SEARCH_HELP = ("The exact task id, part of the task name or exception type, or words of the arguments, keyword "
               "arguments or exception message (PostgreSQL): every word of the term is a word there, the last "
               "may be the beginning of one unless it is a number; case-insensitive; an email address or host "
               "name is one word (user7@ex finds user7@example.com, example.com does not). SQLite: part of any "
               "of these fields.")
_ISO = {"invalid": "Not an ISO 8601 timestamp. Use for example 2026-11-22T10:00:00Z."}


def _choices_error(choices: Any) -> dict[str, str]:
    allowed = ", ".join(str(value) for value, _ in choices)
    return {"invalid_choice": f"%(value)s is not a valid choice. Allowed values: {allowed}."}


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 filter whose value is compared in UTC (PostgreSQL rejects offsets such as -22:53)."""

    def __init__(self, *args: Any, param_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._param_name = param_name

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        return super().filter(qs, to_utc(value, self.param_name) if value else value)

    @property
    def param_name(self) -> str:
        """The query parameter named in errors."""
        return self._param_name or ("since" if self.lookup_expr == "gte" else "until")


class JobOrderingFilter(django_filters.OrderingFilter):
    """Order by an indexed timestamp; the id breaks ties so pages never repeat or skip rows."""

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if not value:
            return qs
        fields = [self.get_ordering_value(param) for param in value]
        direction = "-" if fields[0].startswith("-") else ""
        return qs.order_by(*fields, f"{direction}id")


class JobRunFilter(django_filters.FilterSet):
    # distinct=False: a plain IN on one table needs no DISTINCT, which would defeat the index order.
    state = django_filters.MultipleChoiceFilter(choices=JobState.choices, distinct=False, error_messages=_choices_error(
        JobState.choices), help_text="Job state; repeat for several.")
    task_name = django_filters.CharFilter(help_text="Exact task name.")
    queue = django_filters.CharFilter(help_text="Exact queue name.")
    worker = django_filters.CharFilter(help_text="Exact worker node name.")
    exception_type = django_filters.CharFilter(help_text="Exception class name, e.g. TimeoutError.")
    range = django_filters.ChoiceFilter(
        choices=[(key, key) for key in metrics.RANGES], method="filter_range",
        error_messages=_choices_error([(key, key) for key in metrics.RANGES]),
        help_text="Jobs first seen within this range ending now.")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte", error_messages=_ISO,
                                             help_text="Jobs first seen at or after (ISO 8601).")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt", error_messages=_ISO,
                                             help_text="Jobs first seen before (ISO 8601).")
    search = django_filters.CharFilter(method="filter_search", max_length=200, help_text=SEARCH_HELP)
    ordering = JobOrderingFilter(fields=ORDERINGS, error_messages=_choices_error(
        [(f"{sign}{name}", "") for name in ORDERINGS for sign in ("", "-")]),
        help_text="Sort order (default -created_at).")

    class Meta:
        model = JobRun
        fields: list[str] = []

    def filter_range(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        since, _until = metrics.range_window(value, timezone.now())
        return queryset.in_range(since, None)

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return metrics.search_jobs(queryset, value)

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        # Search last, whatever the declaration order: its capped count counts branches over the queryset
        # search_jobs receives, which must carry every other filter.
        data = self.form.cleaned_data
        for name in sorted(data, key=lambda field: field == "search"):
            queryset = self.filters[name].filter(queryset, data[name])
        return queryset
