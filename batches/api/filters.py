"""FilterSets and ordering of the batches API: every bad value is a 400 naming the parameter."""

from __future__ import annotations

import django_filters
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from monitoring.api.filters import UTCDateTimeFilter

from ..models import AIProcessingRequest, BatchJob, BatchStatus, Endpoint, RequestStatus


def _choice(choices: list[str], what: str) -> django_filters.ChoiceFilter:
    return django_filters.ChoiceFilter(choices=[(c, c) for c in choices], error_messages={
        "invalid_choice": f"%(value)s is not a {what}; use one of: {', '.join(choices)}."})


class BatchJobFilter(django_filters.FilterSet):
    status = _choice(BatchStatus.values, "batch status")
    job_type = django_filters.CharFilter()
    company = django_filters.NumberFilter(field_name="company_id")
    model = django_filters.CharFilter()
    endpoint = _choice(Endpoint.values, "endpoint")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte", param_name="created_after")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt", param_name="created_before")

    class Meta:
        model = BatchJob
        fields = ["status", "job_type", "company", "model", "endpoint", "created_after", "created_before"]


class AIProcessingRequestFilter(django_filters.FilterSet):
    status = _choice(RequestStatus.values, "request status")
    job_type = django_filters.CharFilter()
    company = django_filters.NumberFilter(field_name="company_id")
    model = django_filters.CharFilter()
    batch = django_filters.NumberFilter(field_name="batch_id")
    error_code = django_filters.CharFilter()
    requested_after = UTCDateTimeFilter(field_name="requested_at", lookup_expr="gte", param_name="requested_after")
    requested_before = UTCDateTimeFilter(field_name="requested_at", lookup_expr="lt", param_name="requested_before")

    class Meta:
        model = AIProcessingRequest
        fields = ["status", "job_type", "company", "model", "batch", "error_code", "requested_after",
                  "requested_before"]


class StrictOrderingFilter(OrderingFilter):
    """``?ordering=`` that answers 400 for a field it cannot sort by instead of ignoring it."""

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if params:
            allowed = [name for name, _ in self.get_valid_fields(queryset, view, {"request": request})]
            bad = [p.strip() for p in params.split(",") if p.strip().lstrip("-") not in allowed]
            if bad:
                raise ValidationError({self.ordering_param: [
                    f"Cannot order by {', '.join(bad)}; use one of: {', '.join(allowed)} (prefix - for descending)."]})
        return super().get_ordering(request, queryset, view)
