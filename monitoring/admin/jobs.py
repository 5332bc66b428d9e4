"""Read-only admin for job records and the audit trail, with audited retry/cancel actions and CSV export.

Every action goes through ``monitoring.control`` (the same services as the API and commands) and asks for
confirmation on a page that states how many jobs it will touch. The job-run changelist stays fast on tens of
millions of rows (see ``monitoring.admin.base``); the jobs dashboard hangs off this admin (``dashboard.py``).
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
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import conf, control, metrics
from ..api.permissions import can_act
from ..audit import Actor
from ..models import AuditEvent, AuditSource, BulkOperation, BulkStatus, JobRun
from ..templatetags.monitoring_admin import seconds
from .base import (
    BigTableAdmin,
    CsvExportMixin,
    ReadOnlyAdmin,
    compact_time,
    preformatted,
    pretty_json,
    safe_next,
)
from .dashboard import JobsDashboardMixin
from .filters import QueueFilter, RecentFilter, TaskNameFilter

CONFIRM_TEMPLATE = "monitoring/admin/confirm_action.html"
STATE_CLASSES = {"SUCCESS": "ok", "FAILURE": "fail", "LOST": "fail", "STARTED": "run", "RETRY": "run",
                 "RECEIVED": "run", "PENDING": "wait", "REVOKED": "other"}


def state_badge(state: str, label: str) -> str:
    """A coloured state label (colour plus text, so it reads without colour too)."""
    return format_html('<span class="jm-badge jm-{}">{}</span>', STATE_CLASSES.get(state, "other"), label)


class RetryForm(forms.Form):
    priority = forms.IntegerField(label=_("Priority"), required=False, min_value=0, max_value=control.MAX_PRIORITY,
                                  help_text=_("Leave empty to keep the original priority."))
    queue = forms.CharField(label=_("Queue"), required=False, help_text=_("Leave empty to keep the original queue."))
    countdown = forms.FloatField(label=_("Countdown (s)"), required=False, min_value=0)
    rerun = forms.BooleanField(label=_("Run again even if it succeeded"), required=False)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "", False)}


@admin.register(JobRun)
class JobRunAdmin(JobsDashboardMixin, CsvExportMixin, BigTableAdmin):
    list_display = ("task_id", "task_name_label", "queue", "state_label", "worker", "first_seen", "runtime_label")
    list_display_links = ("task_id",)
    list_filter = ("state", QueueFilter, TaskNameFilter, RecentFilter)
    # Searched by get_search_results through the API's search service (index-backed on PostgreSQL).
    search_fields = ("=task_id", "task_name")
    search_help_text = _("An exact task id, part of a task name or exception type, or words of the arguments "
                         "or exception message (the last word may be a beginning).")
    date_hierarchy = "created_at"
    list_only = ("id", "task_id", "task_name", "queue", "state", "worker", "created_at", "runtime")
    actions = ("retry_selected", "cancel_selected", "export_selected_csv")
    csv_fields = ("task_id", "task_name", "queue", "state", "worker", "retries", "created_at", "started_at",
                  "finished_at", "wait_time", "runtime", "exception_type", "exception_message", "retry_of")
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "origin", "state_label", "queue", "routing_key", "worker",
                           "priority", "retries")}),
        (_("Timing"), {"fields": ("created_at", "published_at", "received_at", "started_at", "finished_at",
                                  "eta", "expires", "wait_time_label", "runtime_label")}),
        (_("Arguments and result"), {"fields": ("args_json", "kwargs_json", "arguments_truncated", "result_text")}),
        (_("Error"), {"fields": ("exception_type", "exception_message", "traceback_text")}),
        (_("Relations"), {"fields": ("parent_id", "root_id", "group_id", "retry_of", "updated_at")}),
    )
    readonly_fields = ("state_label", "args_json", "kwargs_json", "result_text", "traceback_text", "wait_time_label",
                       "runtime_label")

    @admin.display(description=_("task name"), ordering="task_name")
    def task_name_label(self, job: JobRun) -> str:
        # A dotted path may break after each dot: unbroken, the longest name sets the table's minimum width and the
        # list scrolls sideways next to the admin's two sidebars.
        return mark_safe(escape(job.task_name).replace(".", ".<wbr>"))  # escaped before the markup is added

    @admin.display(description=_("first seen"), ordering="created_at")
    def first_seen(self, job: JobRun) -> str:
        return compact_time(job.created_at)

    # Durations as the dashboard writes them (381 ms, 4 min 05 s), not as raw floats; the CSV export keeps seconds.
    @admin.display(description=_("runtime"), ordering="runtime")
    def runtime_label(self, job: JobRun) -> str:
        return seconds(job.runtime)

    @admin.display(description=_("wait time"), ordering="wait_time")
    def wait_time_label(self, job: JobRun) -> str:
        return seconds(job.wait_time)

    @admin.display(description=_("state"), ordering="state")
    def state_label(self, job: JobRun) -> str:
        return state_badge(job.state, job.get_state_display())

    @admin.display(description=_("positional arguments"))
    def args_json(self, job: JobRun) -> str:
        return pretty_json(job.args)

    @admin.display(description=_("keyword arguments"))
    def kwargs_json(self, job: JobRun) -> str:
        return pretty_json(job.kwargs)

    @admin.display(description=_("result summary"))
    def result_text(self, job: JobRun) -> str:
        return preformatted(job.result)

    @admin.display(description=_("traceback"))
    def traceback_text(self, job: JobRun) -> str:
        return preformatted(job.traceback)

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        """The same matches as the API's ``search`` (:func:`monitoring.metrics.search_jobs`)."""
        return metrics.search_jobs(queryset, search_term), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "dashboard_url": self._url("dashboard")}
        return super().changelist_view(request, extra_context)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return can_act(request.user)

    def actor(self, request: HttpRequest) -> Actor:
        return Actor.from_request(request, AuditSource.ADMIN)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            *self.dashboard_urls(),
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
                return HttpResponseRedirect(safe_next(request, self._change_url(job)))
        back = safe_next(request, self._change_url(job))
        return self._confirm_page(request, title=_("Retry"), statement=_("Retry 1 job: %(job)s?") % {"job": job},
                                  form=form, submit_label=_("Yes, retry"), cancel_url=back,
                                  next=back if back != self._change_url(job) else "")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable_job(request, object_id)
        if request.method == "POST":
            try:
                result = control.cancel(self.actor(request), job.task_id)
            except control.ControlError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, result.message, messages.SUCCESS)
            return HttpResponseRedirect(safe_next(request, self._change_url(job)))
        back = safe_next(request, self._change_url(job))
        return self._confirm_page(request, title=_("Cancel"), statement=_("Cancel 1 job: %(job)s?") % {"job": job},
                                  submit_label=_("Yes, cancel it"), cancel_url=back,
                                  next=back if back != self._change_url(job) else "")

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
class AuditEventAdmin(CsvExportMixin, BigTableAdmin):
    list_display = ("created_at", "actor_name", "source", "action", "outcome", "client_address", "detail")
    list_filter = ("source", "outcome", "action", RecentFilter)
    # Prefix match on the actor's name, case-sensitive so it stays a plain LIKE 'x%' (the table is small).
    search_fields = ("actor_name__startswith",)
    date_hierarchy = "created_at"
    actions = ("export_selected_csv",)
    csv_fields = ("created_at", "actor_name", "source", "client_address", "action", "targets", "parameters",
                  "outcome", "detail", "new_task_ids")
    fields = ("created_at", "actor", "actor_name", "source", "client_address", "action", "targets_json",
              "parameters_json", "outcome", "detail", "new_task_ids_json")
    readonly_fields = ("targets_json", "parameters_json", "new_task_ids_json")

    @admin.display(description=_("targets"))
    def targets_json(self, event: AuditEvent) -> str:
        return pretty_json(event.targets)

    @admin.display(description=_("parameters"))
    def parameters_json(self, event: AuditEvent) -> str:
        return pretty_json(event.parameters)

    @admin.display(description=_("new task ids"))
    def new_task_ids_json(self, event: AuditEvent) -> str:
        return pretty_json(event.new_task_ids)



@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyAdmin):
    list_display = ("id", "action", "status", "total", "processed", "succeeded", "skipped", "failed",
                    "created_by_name", "created_at")
    list_filter = ("status", "action")
