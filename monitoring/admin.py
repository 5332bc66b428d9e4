"""Read-only admin for job records and the audit trail, with audited retry/cancel actions.

Every action goes through ``monitoring.control`` (the same services as the API and commands) and asks for
confirmation on a page that states how many jobs it will touch.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import conf, control
from .api.permissions import can_act
from .audit import Actor
from .models import AuditEvent, AuditSource, BulkOperation, BulkStatus, JobRun

CONFIRM_TEMPLATE = "monitoring/admin/confirm_action.html"


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, change or delete: records are written by workers and services only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RetryForm(forms.Form):
    priority = forms.IntegerField(label=_("Priority"), required=False, min_value=0, max_value=control.MAX_PRIORITY,
                                  help_text=_("Leave empty to keep the original priority."))
    queue = forms.CharField(label=_("Queue"), required=False, help_text=_("Leave empty to keep the original queue."))
    countdown = forms.FloatField(label=_("Countdown (s)"), required=False, min_value=0)
    rerun = forms.BooleanField(label=_("Run again even if it succeeded"), required=False)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "", False)}


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ("task_id", "task_name", "queue", "state", "worker", "created_at", "runtime")
    list_filter = ("state",)
    search_fields = ("=task_id",)
    show_full_result_count = False  # no COUNT(*) over millions of rows
    actions = ("retry_selected", "cancel_selected")

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user)

    def actor(self, request: HttpRequest) -> Actor:
        return Actor.from_request(request, AuditSource.ADMIN)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("bulk/<int:operation_id>/confirm/", view(self.confirm_bulk_view), name=f"{prefix}_bulk_confirm"),
            path("<path:object_id>/retry/", view(self.retry_view), name=f"{prefix}_retry"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name=f"{prefix}_cancel"),
            *super().get_urls(),
        ]

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request),
                         "cancellable_states": control.CANCELLABLE_STATES}
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- changelist actions: preview (freeze and count), then a confirmation page ----------------------

    def _preview(self, request: HttpRequest, action: str, queryset: Any) -> HttpResponse | None:
        cap = conf.get("BULK_MAX_ITEMS")
        ids = list(queryset.order_by().values_list("task_id", flat=True)[:cap + 1])
        try:
            operation = control.preview_bulk(self.actor(request), action, ids=ids)
        except control.ControlError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return None
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:monitoring_jobrun_bulk_confirm",
                                            args=[operation.pk]))

    @admin.action(permissions=["operate"], description=_("Retry selected jobs"))
    def retry_selected(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._preview(request, "retry", queryset)

    @admin.action(permissions=["operate"], description=_("Cancel selected jobs"))
    def cancel_selected(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._preview(request, "cancel", queryset)

    def confirm_bulk_view(self, request: HttpRequest, operation_id: int) -> HttpResponse:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        operation = get_object_or_404(BulkOperation, pk=operation_id, status=BulkStatus.PREVIEW)
        changelist = reverse(f"{self.admin_site.name}:monitoring_jobrun_changelist")
        if request.method == "POST":
            try:
                done = control.confirm_bulk(self.actor(request), operation.pk)
            except control.ControlError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(changelist)
            if done.status == BulkStatus.QUEUED:
                self.message_user(request, _("%(action)s of %(count)d jobs started in the background (operation "
                                             "%(id)d).") % {"action": done.action.capitalize(), "count": done.total,
                                                            "id": done.pk}, messages.INFO)
            else:
                level = messages.SUCCESS if not (done.skipped or done.failed) else messages.WARNING
                self.message_user(request, control.bulk_summary(done), level)
            return HttpResponseRedirect(changelist)
        eligible = control.eligible_count(operation)
        verb = _("Retry") if operation.action == "retry" else _("Cancel")
        statement = ngettext("%(verb)s %(count)d job?", "%(verb)s %(count)d jobs?", operation.total) % {
            "verb": verb, "count": operation.total}
        note = (_("%(eligible)d of them are in a state this action applies to; the others will be skipped.")
                % {"eligible": eligible}) if eligible != operation.total else ""
        return self._confirm_page(request, title=f"{verb} {operation.total}", statement=statement, note=note,
                                  sample=operation.task_ids[:20], more=max(operation.total - 20, 0),
                                  submit_label=_("Yes, %(verb)s %(count)d") % {"verb": verb.lower(),
                                                                               "count": operation.total},
                                  cancel_url=changelist)

    # --- detail page buttons ---------------------------------------------------------------------------

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable_job(request, object_id)
        form = RetryForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = control.retry(self.actor(request), job.task_id, form.overrides())
            except control.ControlError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, result.message, messages.SUCCESS)
                return HttpResponseRedirect(self._change_url(job))
        return self._confirm_page(request, title=_("Retry"), statement=_("Retry 1 job: %(job)s?") % {"job": job},
                                  form=form, submit_label=_("Yes, retry"), cancel_url=self._change_url(job))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable_job(request, object_id)
        if request.method == "POST":
            try:
                result = control.cancel(self.actor(request), job.task_id)
            except control.ControlError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, result.message, messages.SUCCESS)
            return HttpResponseRedirect(self._change_url(job))
        return self._confirm_page(request, title=_("Cancel"), statement=_("Cancel 1 job: %(job)s?") % {"job": job},
                                  submit_label=_("Yes, cancel it"), cancel_url=self._change_url(job))

    def _operable_job(self, request: HttpRequest, object_id: str) -> JobRun:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return get_object_or_404(JobRun, pk=object_id)

    def _change_url(self, job: JobRun) -> str:
        return reverse(f"{self.admin_site.name}:monitoring_jobrun_change", args=[job.pk])

    def _confirm_page(self, request: HttpRequest, **context: Any) -> HttpResponse:
        return TemplateResponse(request, CONFIRM_TEMPLATE, {
            **self.admin_site.each_context(request), "opts": self.opts, **context})


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "source", "action", "outcome", "client_address", "detail")
    list_filter = ("source", "outcome", "action")
    search_fields = ("actor_name",)
    date_hierarchy = "created_at"


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyAdmin):
    list_display = ("id", "action", "status", "total", "processed", "succeeded", "skipped", "failed",
                    "created_by_name", "created_at")
    list_filter = ("status", "action")

from . import alerts_admin  # noqa: E402, F401 - alert rules and alerts (their own module)
