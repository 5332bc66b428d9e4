"""Read endpoints: they parse the query, call one service in ``monitoring.metrics`` and render its result."""

from __future__ import annotations

from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import metrics
from ..models import JobRun
from . import serializers as s
from .base import MonitoringAPIMixin
from .filters import JobRunFilter
from .pagination import ReadPagination
from .params import RangeParams, StuckParams, TimelineParams, TrendParams

ERRORS = {400: OpenApiResponse(description="A query parameter is invalid; the body names it and what is allowed."),
          403: OpenApiResponse(description="Not authenticated, or not a job monitor viewer.")}


def validated(params_class: type, request: Request) -> Any:
    params = params_class(data=request.query_params)
    params.is_valid(raise_exception=True)
    return params


class ReadView(MonitoringAPIMixin, APIView):
    """Base of the read endpoints (auth, viewer permission, scoped throttle)."""


@extend_schema(tags=["jobs"], responses={200: s.JobRunSerializer(many=True), **ERRORS})
class JobListView(MonitoringAPIMixin, ListAPIView):
    """Job records, newest first, filtered; page/limit pages or a keyset cursor for deep walks."""

    serializer_class = s.JobRunSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_class = JobRunFilter
    pagination_class = ReadPagination
    cursor_pagination = True

    def get_queryset(self) -> Any:
        return JobRun.objects.defer("traceback", "result").order_by("-created_at", "-id")


@extend_schema(tags=["jobs"], responses={200: s.JobDetailSerializer, 404: OpenApiResponse(
    description="No job with this task id."), 403: ERRORS[403]})
class JobDetailView(ReadView):
    """One job: full record, ordered state transitions, parent, children and retries."""

    def get(self, request: Request, task_id: str) -> Response:
        try:
            detail = metrics.job_detail(task_id)
        except JobRun.DoesNotExist:
            raise NotFound({"task_id": f"No job with task id {task_id!r}."}) from None
        return Response(s.JobDetailSerializer(detail, context={"request": request}).data)


@extend_schema(tags=["metrics"], responses={200: s.MetricsSerializer, 403: ERRORS[403]})
class MetricsView(ReadView):
    """Per-queue counts, totals, success rate, processing rate and workers online."""

    def get(self, request: Request) -> Response:
        return Response(metrics.metrics())


@extend_schema(tags=["metrics"], parameters=[TrendParams], responses={200: s.TrendsSerializer, **ERRORS})
class TrendsView(ReadView):
    """Outcomes and processing times per queue and task name over a period, with a series for charts."""

    def get(self, request: Request) -> Response:
        params = validated(TrendParams, request)
        return Response(metrics.trends(params.validated_data["period"]))


@extend_schema(tags=["metrics"], parameters=[RangeParams], responses={200: s.StatsSerializer, **ERRORS})
class StatsView(ReadView):
    """Per job type: total runs, success rate, average duration, last run and current status."""

    def get(self, request: Request) -> Response:
        since, until = validated(RangeParams, request).window()
        return Response(metrics.stats(since, until))


@extend_schema(tags=["metrics"], parameters=[TimelineParams], responses={200: s.TimelineSerializer, **ERRORS})
class TimelineView(ReadView):
    """Executions started in the range, and earlier ones still running, as bars (start, end, status)."""

    def get(self, request: Request) -> Response:
        params = validated(TimelineParams, request)
        since, until = params.window()
        return Response(metrics.timeline(since, until, params.validated_data.get("task_name")))


@extend_schema(tags=["metrics"], parameters=[TimelineParams], responses={200: s.OverlapsSerializer, **ERRORS})
class OverlapsView(ReadView):
    """Groups of executions that ran at the same time, with how long they overlapped."""

    def get(self, request: Request) -> Response:
        params = validated(TimelineParams, request)
        since, until = params.window()
        return Response(metrics.overlaps(since, until, params.validated_data.get("task_name")))


@extend_schema(tags=["metrics"], parameters=[StuckParams], responses={200: s.StuckJobSerializer(many=True), **ERRORS})
class StuckView(MonitoringAPIMixin, GenericAPIView):
    """Jobs active longer than a threshold, longest first, with severity."""

    pagination_class = ReadPagination
    serializer_class = s.StuckJobSerializer

    def get(self, request: Request) -> Response:
        threshold = validated(StuckParams, request).validated_data.get("threshold")
        page = self.paginate_queryset(metrics.stuck_jobs(threshold))
        return self.get_paginated_response([metrics.describe_stuck(job) for job in page])


@extend_schema(tags=["metrics"], parameters=[RangeParams], responses={200: s.ErrorGroupSerializer(many=True),
                                                                      **ERRORS})
class ErrorGroupsView(MonitoringAPIMixin, GenericAPIView):
    """Failures grouped by exception type and normalised message, most frequent first."""

    pagination_class = ReadPagination
    serializer_class = s.ErrorGroupSerializer

    def get(self, request: Request) -> Response:
        since, until = validated(RangeParams, request).window()
        return self.get_paginated_response(self.paginate_queryset(metrics.error_groups(since, until)))


@extend_schema(tags=["queues"], responses={200: s.QueueListSerializer, 403: ERRORS[403]})
class QueueListView(ReadView):
    """Every known queue (configured, consumed by a worker, or seen in records): depth, consumers, paused."""

    @extend_schema(operation_id="queues_list")
    def get(self, request: Request) -> Response:
        return Response(metrics.queues())


def known_queue(name: str) -> str:
    if not metrics.queue_exists(name):
        raise NotFound({"name": f"No queue named {name!r} is configured, consumed or recorded."})
    return name


@extend_schema(tags=["queues"], responses={200: s.QueueMetricsSerializer, 404: OpenApiResponse(
    description="Unknown queue."), 403: ERRORS[403]})
class QueueDetailView(ReadView):
    """One queue's counts, depth, paused flag and active jobs."""

    def get(self, request: Request, name: str) -> Response:
        return Response(metrics.queue_metrics(known_queue(name)))


@extend_schema(tags=["health"], responses={200: s.HealthSerializer, 503: s.HealthSerializer, 403: ERRORS[403]})
class HealthView(ReadView):
    """Database, broker and workers, each with a status: 200 when all are ok, 503 otherwise."""

    def get(self, request: Request) -> Response:
        report = metrics.health()
        code = status.HTTP_200_OK if report["status"] == "healthy" else status.HTTP_503_SERVICE_UNAVAILABLE
        return Response(report, status=code)
