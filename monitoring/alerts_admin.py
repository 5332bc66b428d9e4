"""Admin for alert rules (editable by operators) and alerts (read-only, acknowledge/resolve actions).

Saving, deleting, acknowledging and resolving go through ``monitoring.alerts``, like the API does, so the
same validation and audit trail apply. Imported from the end of ``monitoring/admin.py``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import alerts, registry
from .api.permissions import can_act
from .audit import Actor
from .control import ControlError
from .models import Alert, AlertDelivery, AlertRule, AuditSource


def _actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, AuditSource.ADMIN)


class AlertRuleForm(forms.ModelForm):
    """Metric and scope offered from the alert registry (batch metrics appear when batches is installed)."""

    metric = forms.ChoiceField(label=_("Metric"))
    scope = forms.ChoiceField(label=_("Scope"))

    class Meta:
        model = AlertRule
        fields = list(alerts.RULE_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [(name, f"{m.label} ({m.comparison}, {m.unit.strip()})")
                                         for name, m in registry.metrics().items()]
        self.fields["scope"].choices = [(name, kind.label) for name, kind in registry.scope_kinds().items()]


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = AlertRuleForm
    list_display = ("name", "metric", "scope", "scope_value", "threshold", "window", "min_samples", "severity",
                    "cooldown", "enabled")
    list_filter = ("enabled", "severity", "metric")
    list_editable = ("enabled",)
    search_fields = ("name",)

    def save_model(self, request: HttpRequest, obj: AlertRule, form: forms.ModelForm, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in alerts.RULE_FIELDS if name in form.cleaned_data}
        if change:
            rule = alerts.update_rule(_actor(request), AlertRule.objects.get(pk=obj.pk), data)
        else:
            rule = alerts.create_rule(_actor(request), data)
        obj.pk, obj.created_at, obj.updated_at = rule.pk, rule.created_at, rule.updated_at

    def delete_model(self, request: HttpRequest, obj: AlertRule) -> None:
        alerts.delete_rule(_actor(request), obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        for rule in queryset:
            alerts.delete_rule(_actor(request), rule)


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = ("event", "channel_type", "channel", "status", "attempts", "last_error", "created_at", "sent_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("rule_name", "scope_key", "severity", "state", "value", "threshold", "fired_at",
                    "acknowledged_by_name", "resolved_at")
    list_filter = ("state", "severity")
    search_fields = ("rule_name", "scope_key")
    date_hierarchy = None
    inlines = [AlertDeliveryInline]
    actions = ("acknowledge_selected", "resolve_selected")
    readonly_fields = [field.name for field in Alert._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user, "monitoring.operate_alert")

    def _act(self, request: HttpRequest, queryset: QuerySet[Alert], service: Any, verb: str) -> None:
        done, refused = 0, []
        for alert_id in queryset.values_list("id", flat=True):
            try:
                service(_actor(request), alert_id)
                done += 1
            except ControlError as exc:
                refused.append(exc.message)
        if done:
            self.message_user(request, ngettext("%(n)d alert %(verb)s.", "%(n)d alerts %(verb)s.", done)
                              % {"n": done, "verb": verb}, messages.SUCCESS)
        for message in refused[:10]:
            self.message_user(request, message, messages.WARNING)

    @admin.action(description=_("Acknowledge selected alerts"), permissions=["operate"])
    def acknowledge_selected(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, alerts.acknowledge, str(_("acknowledged")))

    @admin.action(description=_("Resolve selected alerts"), permissions=["operate"])
    def resolve_selected(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        self._act(request, queryset, alerts.resolve, str(_("resolved")))
