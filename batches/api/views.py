"""Viewsets of the batches API: they parse input, check permission, call a service and render."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from monitoring.api.base import MonitoringAPIMixin
from monitoring.audit import Actor
from monitoring.models import AuditSource

from .. import metrics, pipeline
from ..models import AIProcessingRequest, BatchJob
from ..providers import ProviderError
from .filters import AIProcessingRequestFilter, BatchJobFilter, StrictOrderingFilter
from .permissions import CanOperateBatches, CanViewRequests
from .serializers import AIProcessingRequestSerializer, BatchJobSerializer, MonitoringQuerySerializer


class BatchJobViewSet(MonitoringAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Provider batches: list, detail, the monitoring report, retry and cancel."""

    queryset = BatchJob.objects.select_related("company")
    serializer_class = BatchJobSerializer
    permission_classes = [CanOperateBatches]
    throttle_scope = "batches"
    filter_backends = [DjangoFilterBackend, StrictOrderingFilter]
    filterset_class = BatchJobFilter
    ordering_fields = ["created_at", "status", "request_count", "cost", "savings", "completed_at"]
    ordering = ["-created_at", "-id"]

    @action(detail=False, methods=["get"])
    def monitoring(self, request: Request) -> Response:
        """Summary, queues, performance and jobs for a time range."""
        params = MonitoringQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(_exact(metrics.monitoring_report(**params.validated_data)))

    @action(detail=False, methods=["get"])
    def pipeline(self, request: Request) -> Response:
        """The pipeline steps' latest runs (duration, items, queries, errors) and the circuit breakers."""
        return Response(metrics.pipeline_health())

    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Resubmit the batch's failed and expired requests in a later batch."""
        job = self.get_object()
        dry_run = _flag(request.data.get("dry_run", False), "dry_run")
        try:
            count = pipeline.retry_batch(job, Actor.from_request(request, AuditSource.API), dry_run=dry_run)
        except pipeline.ActionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"batch": job.pk, "resubmitted": count, "dry_run": dry_run})

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the batch (locally before submission, else at the provider)."""
        job = self.get_object()
        try:
            job = pipeline.cancel_batch(job, Actor.from_request(request, AuditSource.API))
        except pipeline.ActionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ProviderError as exc:
            return Response({"detail": f"The provider refused or failed: {exc}. The error is recorded on the batch; "
                                       f"try again."}, status=status.HTTP_502_BAD_GATEWAY)
        return Response(self.get_serializer(job).data)

    def get_throttles(self):
        self.throttle_scope = "batches" if self.request.method in ("GET", "HEAD", "OPTIONS") else "monitoring-actions"
        return super().get_throttles()


class AIProcessingRequestViewSet(MonitoringAPIMixin, viewsets.ReadOnlyModelViewSet):
    """AI processing requests with their results, usage and costs."""

    queryset = AIProcessingRequest.objects.all()
    serializer_class = AIProcessingRequestSerializer
    permission_classes = [CanViewRequests]
    throttle_scope = "batches"
    filter_backends = [DjangoFilterBackend, StrictOrderingFilter]
    filterset_class = AIProcessingRequestFilter
    ordering_fields = ["requested_at", "completed_at", "status", "priority", "cost"]
    ordering = ["-requested_at", "-id"]


def _exact(value: Any) -> Any:
    """Render Decimal amounts as strings ("0.78"), never as binary floats."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def _flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("0", "false", "no", ""):
        return False
    raise ValidationError({name: [f"{value!r} is not a boolean; use true or false."]})
