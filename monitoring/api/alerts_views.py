"""Alert API: rules (operators change them, viewers read) and alerts (filter, acknowledge, resolve)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Count, Q
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from .. import alerts
from ..audit import Actor
from ..control import ControlError
from ..models import OPEN_ALERT_STATES, Alert, AlertRule, AlertSeverity, AlertState, AuditSource
from . import alerts_serializers as s
from .base import MonitoringAPIMixin
from .filters import _choices_error
from .permissions import RolePermission


class AlertRulePermission(RolePermission):
    """Viewers read rules; creating, changing and deleting need the matching model permission."""

    read_permission = "monitoring.view_alertrule"
    ACT = {"POST": "monitoring.add_alertrule", "PUT": "monitoring.change_alertrule",
           "PATCH": "monitoring.change_alertrule", "DELETE": "monitoring.delete_alertrule"}

    def has_permission(self, request: Any, view: Any) -> bool:
        self.act_permission = self.ACT.get(request.method, "monitoring.change_alertrule")
        return super().has_permission(request, view)


class AlertPermission(RolePermission):
    read_permission = "monitoring.view_alert"
    act_permission = "monitoring.operate_alert"


class AlertFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=AlertState.choices,
                                                error_messages=_choices_error(AlertState.choices),
                                                help_text="firing, acknowledged or resolved; repeat for several.")
    severity = django_filters.MultipleChoiceFilter(choices=AlertSeverity.choices,
                                                   error_messages=_choices_error(AlertSeverity.choices),
                                                   help_text="Severity; repeat for several.")
    rule = django_filters.NumberFilter(field_name="rule_id", help_text="Alerts of this rule id.")
    open = django_filters.BooleanFilter(method="filter_open", help_text="true: firing or acknowledged only.")

    class Meta:
        model = Alert
        fields: list[str] = []

    def filter_open(self, queryset: Any, name: str, value: bool | None) -> Any:
        if value is None:
            return queryset
        return queryset.filter(state__in=OPEN_ALERT_STATES) if value else queryset.filter(state=AlertState.RESOLVED)


class AlertAPIMixin(MonitoringAPIMixin):
    def actor(self) -> Actor:
        return Actor.from_request(self.request, AuditSource.API)

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, alerts.RuleInvalid):
            return Response(exc.errors, status=400)
        if isinstance(exc, ControlError):
            return Response(exc.as_dict(), status=exc.status)
        return super().handle_exception(exc)


@extend_schema(tags=["alerts"])
class AlertRuleViewSet(AlertAPIMixin, viewsets.ModelViewSet):
    """Alert rules. A rule with an unknown metric, scope or a bad threshold is refused with a 400 naming it."""

    serializer_class = s.AlertRuleSerializer
    permission_classes = [AlertRulePermission]

    def get_queryset(self) -> Any:
        return AlertRule.objects.annotate(
            open_alert_count=Count("alerts", filter=Q(alerts__state__in=OPEN_ALERT_STATES))).order_by("name", "id")

    def get_throttles(self) -> list[Any]:
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            self.throttle_scope = "monitoring-actions"
        return super().get_throttles()

    def perform_create(self, serializer: s.AlertRuleSerializer) -> None:
        serializer.instance = alerts.create_rule(self.actor(), serializer.validated_data)

    def perform_update(self, serializer: s.AlertRuleSerializer) -> None:
        serializer.instance = alerts.update_rule(self.actor(), serializer.instance, serializer.validated_data)

    def perform_destroy(self, instance: AlertRule) -> None:
        alerts.delete_rule(self.actor(), instance)


ACTION_DOC = {200: s.AlertSerializer, 404: OpenApiResponse(description="No alert with this id."),
              409: OpenApiResponse(description="The alert is not in a state this action applies to.")}


@extend_schema(tags=["alerts"])
class AlertViewSet(AlertAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Alerts, newest first: open ones and history. Filter by state, severity and rule."""

    serializer_class = s.AlertSerializer
    permission_classes = [AlertPermission]
    filter_backends = [DjangoFilterBackend]
    filterset_class = AlertFilter
    queryset = Alert.objects.prefetch_related("deliveries").order_by("-fired_at", "-id")

    def _act(self, service: Any, pk: str) -> Response:
        params = s.AlertActionSerializer(data=self.request.data)
        params.is_valid(raise_exception=True)
        alert = service(self.actor(), pk, comment=params.validated_data["comment"])
        return Response(s.AlertSerializer(Alert.objects.prefetch_related("deliveries").get(pk=alert.pk)).data)

    @extend_schema(request=s.AlertActionSerializer, responses=ACTION_DOC,
                   summary="Acknowledge a firing alert (it stays open until its condition clears)")
    @action(detail=True, methods=["post"], throttle_scope="monitoring-actions")
    def acknowledge(self, request: Request, pk: str) -> Response:
        return self._act(alerts.acknowledge, pk)

    @extend_schema(request=s.AlertActionSerializer, responses=ACTION_DOC, summary="Resolve an open alert by hand")
    @action(detail=True, methods=["post"], throttle_scope="monitoring-actions")
    def resolve(self, request: Request, pk: str) -> Response:
        return self._act(alerts.resolve, pk)
