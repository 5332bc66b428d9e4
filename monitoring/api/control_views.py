"""Control API views: thin faces over ``monitoring.control`` (parse, check permission, call, render)."""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import control
from ..audit import Actor
from ..models import AuditEvent, AuditSource, BulkOperation
from . import control_serializers as s
from .base import MonitoringAPIMixin
from .filters import UTCDateTimeFilter
from .permissions import CanOperateQueues, CanViewJobs, RolePermission


class ControlView(MonitoringAPIMixin, APIView):
    """Base of the action endpoints: the actions throttle scope and service errors as JSON."""

    throttle_scope = "monitoring-actions"
    permission_classes = [CanViewJobs]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, control.ControlError):
            return Response(exc.as_dict(), status=exc.status)
        return super().handle_exception(exc)

    def actor(self) -> Actor:
        return Actor.from_request(self.request, AuditSource.API)

    def body(self) -> dict[str, Any]:
        data = self.request.data
        if hasattr(data, "dict"):  # a form-encoded QueryDict
            data = data.dict()
        if not isinstance(data, dict):
            raise control.InvalidOverride("body", "must be a JSON object.", "a JSON object")
        return dict(data)


class JobRetryView(ControlView):
    @extend_schema(request=s.RetryRequestSerializer, responses={201: s.RetryResultSerializer},
                   parameters=[OpenApiParameter("Idempotency-Key", location="header", required=False)],
                   summary="Retry a job with its stored arguments, optionally changed")
    def post(self, request: Request, task_id: str) -> Response:
        overrides = self.body()
        key = overrides.pop("idempotency_key", None) or request.headers.get("Idempotency-Key") or None
        result = control.retry(self.actor(), task_id, overrides, idempotency_key=key)
        data = {"success": True, **control.as_dict(result)}
        return Response(s.RetryResultSerializer(data).data,
                        status=status.HTTP_200_OK if result.duplicate else status.HTTP_201_CREATED)


class JobCancelView(ControlView):
    @extend_schema(request=s.CancelRequestSerializer, responses=s.CancelResultSerializer,
                   summary="Revoke a waiting job or terminate a running one")
    def post(self, request: Request, task_id: str) -> Response:
        body = self.body()
        extra = sorted(set(body) - {"signal"})
        if extra:
            raise control.InvalidOverride(extra[0], "unknown parameter; cancel takes only signal.", ["signal"])
        result = control.cancel(self.actor(), task_id, signal=body.get("signal") or "SIGTERM")
        return Response(s.CancelResultSerializer(control.as_dict(result)).data)


class BulkView(ControlView):
    @extend_schema(request=s.BulkRequestSerializer, responses={200: s.BulkOperationSerializer,
                                                                202: s.BulkOperationSerializer},
                   summary="Preview, or act on, a selection of jobs (ids or a filter)")
    def post(self, request: Request) -> Response:
        body = self.body()
        if "operation" in body:
            extra = sorted(set(body) - {"operation"})
            if extra:
                raise control.InvalidOverride(extra[0], "confirming a preview takes only operation; the selection "
                                                        "and parameters were fixed by the preview.", ["operation"])
            operation = control.confirm_bulk(self.actor(), body["operation"])
        else:
            extra = sorted(set(body) - {"action", "ids", "filter", "parameters", "preview"})
            if extra:
                raise control.InvalidOverride(extra[0], "unknown field.",
                                              ["action", "ids", "filter", "parameters", "preview", "operation"])
            parameters = body.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise control.InvalidOverride("parameters", "must be an object.", "a JSON object")
            kwargs = {"ids": body.get("ids"), "filters": body.get("filter"), "parameters": parameters}
            if control._bool(body, "preview"):
                operation = control.preview_bulk(self.actor(), body.get("action"), **kwargs)
            else:
                operation = control.bulk(self.actor(), body.get("action"), **kwargs)
        code = status.HTTP_202_ACCEPTED if operation.status == "queued" else status.HTTP_200_OK
        return Response(s.BulkOperationSerializer(operation).data, status=code)


class BulkDetailView(MonitoringAPIMixin, generics.RetrieveAPIView):
    """Progress of a bulk operation."""

    permission_classes = [CanViewJobs]
    serializer_class = s.BulkOperationSerializer
    queryset = BulkOperation.objects.all()


class QueueControlView(ControlView):
    permission_classes = [CanOperateQueues]
    service: Any = None
    serializer_class: Any = s.QueueResultSerializer

    def post(self, request: Request, name: str) -> Response:
        result = type(self).service(self.actor(), name)
        return Response(self.serializer_class(control.as_dict(result)).data)


class QueuePauseView(QueueControlView):
    service = control.pause

    @extend_schema(request=None, responses=s.QueueResultSerializer, summary="Pause a queue")
    def post(self, request: Request, name: str) -> Response:
        return super().post(request, name)


class QueueResumeView(QueueControlView):
    service = control.resume

    @extend_schema(request=None, responses=s.QueueResultSerializer, summary="Resume a paused queue")
    def post(self, request: Request, name: str) -> Response:
        return super().post(request, name)


class QueuePurgeView(QueueControlView):
    service = control.purge
    serializer_class = s.PurgeResultSerializer

    @extend_schema(request=None, responses=s.PurgeResultSerializer, summary="Delete the waiting messages of a queue")
    def post(self, request: Request, name: str) -> Response:
        return super().post(request, name)


class QueueClearView(ControlView):
    # Clearing deletes job records, so it needs the job permission, not the queue one.
    permission_classes = [CanViewJobs]

    @extend_schema(request=None, responses=s.ClearResultSerializer, summary="Delete finished records of a queue",
                   parameters=[OpenApiParameter("type", enum=list(control.CLEAR_TYPES), default="all"),
                               OpenApiParameter("older_than", str, description="ISO 8601 date-time"),
                               OpenApiParameter("dry_run", bool)])
    def post(self, request: Request, name: str) -> Response:
        params = {**self.body(), **request.query_params.dict()}
        extra = sorted(set(params) - {"type", "older_than", "dry_run"})
        if extra:
            raise control.InvalidOverride(extra[0], "unknown parameter.", ["type", "older_than", "dry_run"])
        result = control.clear(self.actor(), name, params.get("type", "all"), older_than=params.get("older_than"),
                               dry_run=control._bool(params, "dry_run"))
        return Response(s.ClearResultSerializer(control.as_dict(result)).data)


class CanViewAudit(RolePermission):
    read_permission = "monitoring.view_auditevent"


class AuditEventFilter(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    actor = django_filters.CharFilter(field_name="actor_name")
    target = django_filters.CharFilter(field_name="targets", lookup_expr="contains", method="filter_target")

    class Meta:
        model = AuditEvent
        fields = ["action", "outcome", "source"]

    def filter_target(self, queryset: Any, name: str, value: str) -> Any:
        return queryset.filter(targets__contains=[value])


class AuditEventListView(MonitoringAPIMixin, generics.ListAPIView):
    """The audit trail, newest first (read-only)."""

    permission_classes = [CanViewAudit]
    serializer_class = s.AuditEventSerializer
    queryset = AuditEvent.objects.order_by("-created_at", "-id")
    filter_backends = [DjangoFilterBackend]
    filterset_class = AuditEventFilter
