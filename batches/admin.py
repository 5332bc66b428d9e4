"""Admin of the batches app: the AI batches dashboard, read-only records, audited retry and cancel actions.

Figures come from ``batches.metrics``; actions call ``batches.pipeline`` with the admin's actor behind a
confirmation page that states how many batches and requests they touch.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from monitoring.admin.base import (
    BigTableAdmin,
    CsvExportMixin,
    ReadOnlyAdmin,
    compact_time,
    money,
    pretty_json,
    safe_next,
)
from monitoring.admin.filters import RecentFilter
from monitoring.audit import Actor
from monitoring.models import AuditSource

from . import metrics, pipeline
from .models import AIProcessingRequest, BatchJob, BatchStatus, Company, PipelineRun
from .providers import ProviderError

DASHBOARD_TEMPLATE = "batches/admin/dashboard.html"
BODY_TEMPLATE = "batches/admin/_dashboard_body.html"
CONFIRM_TEMPLATE = "monitoring/admin/confirm_action.html"
CANCELLABLE = (BatchStatus.PENDING, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
RANGE_CHOICES = [("1h", _("Last hour")), ("24h", _("Last 24 hours")), ("7d", _("Last 7 days")),
                 ("30d", _("Last 30 days"))]


class RequestedFilter(RecentFilter):
    title = _("requested")
    field = "requested_at"


class BatchDashboardControls(forms.Form):
    range = forms.ChoiceField(label=_("Time range"), choices=RANGE_CHOICES, required=False)
    status = forms.ChoiceField(label=_("Status"), required=False,
                               choices=[("", _("All statuses")), *BatchStatus.choices])
    job_type = forms.CharField(label=_("Job type"), required=False, max_length=64)

    def value(self, name: str, default: str = "") -> str:
        data = self.cleaned_data if self.is_valid() else {}
        return data.get(name) or default


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "min_batch_size", "max_wait", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name"]


@admin.register(BatchJob)
class BatchJobAdmin(CsvExportMixin, BigTableAdmin):
    list_display = ["batch", "company", "status", "job_type", "model", "request_count", "completed_count",
                    "failed_count", "cost_label", "savings_label", "created"]
    # A batch holds thousands of requests, so this table stays small enough for Django's DISTINCT filters.
    list_filter = ["status", "job_type", "model", RecentFilter]
    list_select_related = ["company"]
    # Exact provider batch id only: an indexed (unique) lookup.
    search_fields = ["=provider_batch_id"]
    search_help_text = _("An exact provider batch id.")
    date_hierarchy = "created_at"
    actions = ["retry_batches", "cancel_batches", "export_selected_csv"]
    csv_fields = ["id", "provider_batch_id", "company__name", "status", "job_type", "model", "endpoint",
                  "request_count", "completed_count", "failed_count", "cost", "sync_cost", "savings", "created_at",
                  "submitted_at", "completed_at", "failed_at", "expired_at", "cancelled_at"]
    readonly_fields = ["status_history_json", "error_summary_json", "provider_errors_json", "metadata_json"]
    exclude = ["status_history", "error_summary", "provider_errors", "metadata"]

    @admin.display(description=_("batch"), ordering="id")
    def batch(self, job: BatchJob) -> str:
        return job.label

    @admin.display(description=_("cost at batch price"), ordering="cost")
    def cost_label(self, job: BatchJob) -> str:
        return money(job.cost)

    @admin.display(description=_("savings"), ordering="savings")
    def savings_label(self, job: BatchJob) -> str:
        return money(job.savings)

    @admin.display(description=_("created"), ordering="created_at")
    def created(self, job: BatchJob) -> str:
        return compact_time(job.created_at)

    @admin.display(description=_("status history"))
    def status_history_json(self, job: BatchJob) -> str:
        return pretty_json(job.status_history)

    @admin.display(description=_("errors by code"))
    def error_summary_json(self, job: BatchJob) -> str:
        return pretty_json(job.error_summary)

    @admin.display(description=_("provider errors"))
    def provider_errors_json(self, job: BatchJob) -> str:
        return pretty_json(job.provider_errors)

    @admin.display(description=_("metadata"))
    def metadata_json(self, job: BatchJob) -> str:
        return pretty_json(job.metadata)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("batches.operate_batchjob")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("dashboard/", view(self.dashboard_view), name=f"{prefix}_dashboard"),
            path("<path:object_id>/retry/", view(self.retry_view), name=f"{prefix}_retry"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name=f"{prefix}_cancel"),
            *super().get_urls(),
        ]

    def _url(self, name: str, *args: Any) -> str:
        return reverse(f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "dashboard_url": self._url("dashboard")})

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_operate": self.has_operate_permission(request),
                         "cancellable_states": CANCELLABLE}
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- dashboard --------------------------------------------------------------------------------------

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        controls = BatchDashboardControls(request.GET or None)
        time_range = controls.value("range", "24h")
        status, job_type = controls.value("status") or None, controls.value("job_type") or None
        report = metrics.monitoring_report(time_range=time_range, status=status, job_type=job_type, limit=25,
                                           now=now)
        series = metrics.series(time_range=time_range, job_type=job_type, now=now)
        health = metrics.pipeline_health(now=now)
        summary = report["summary"]
        cards = [
            {"key": "total_jobs", "label": _("Total jobs"), "value": summary["total_jobs"],
             "note": _("%(completed)d completed, %(failed)d failed, %(pending)d in progress") % {
                 "completed": summary["completed_jobs"], "failed": summary["failed_jobs"],
                 "pending": summary["pending_jobs"]}},
            {"key": "success_rate", "label": _("Success rate"), "value": f"{summary['success_rate']}%",
             "note": _("of %(count)d processed requests") % {"count": summary["processed_requests"]}},
            {"key": "cost_savings", "label": _("Cost savings"),
             "value": f"${summary['cost_savings']['current_period']}",
             "note": _("%(pct)s%% less than the individual API ($%(sync)s)") % {
                 "pct": summary["cost_savings"]["savings_percentage"],
                 "sync": summary["cost_savings"]["cost_at_sync_price"]}},
            {"key": "projected", "label": _("Projected monthly savings"),
             "value": f"${summary['cost_savings']['projected_monthly']}", "note": _("at this period's pace")},
        ]
        steps = [{"step": step, "label": label, "last": (health["steps"].get(step) or [None])[0]}
                 for step, label in PipelineRun._meta.get_field("step").choices]
        context = {
            **self.admin_site.each_context(request), "opts": self.opts, "title": _("AI batches dashboard"),
            "controls": controls, "time_range": time_range, "status": status or "", "job_type": job_type or "",
            "report": report, "cards": cards, "series": series["points"], "queues": report["queues"],
            "steps": steps, "circuits": health["circuits"],
            "can_operate": self.has_operate_permission(request), "cancellable": CANCELLABLE,
            "next": request.get_full_path(),
        }
        template = BODY_TEMPLATE if request.GET.get("fragment") else DASHBOARD_TEMPLATE
        return TemplateResponse(request, template, context)

    # --- actions: one batch (detail page and dashboard) --------------------------------------------------

    def _operable(self, request: HttpRequest, object_id: str) -> BatchJob:
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return get_object_or_404(BatchJob.objects.select_related("company"), pk=object_id)

    def _confirm(self, request: HttpRequest, **context: Any) -> HttpResponse:
        return TemplateResponse(request, CONFIRM_TEMPLATE, {
            **self.admin_site.each_context(request), "opts": self.opts, **context})

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable(request, object_id)
        back = safe_next(request, reverse(f"{self.admin_site.name}:batches_batchjob_change", args=[job.pk]))
        actor = Actor.from_request(request, AuditSource.ADMIN)
        if request.method == "POST":
            try:
                count = pipeline.retry_batch(job, actor)
            except pipeline.ActionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, ngettext("%(count)d request of %(batch)s resubmitted.",
                                                    "%(count)d requests of %(batch)s resubmitted.", count)
                                  % {"count": count, "batch": job}, messages.SUCCESS)
            return HttpResponseRedirect(back)
        try:
            count = pipeline.retry_batch(job, actor, dry_run=True)
        except pipeline.ActionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(back)
        statement = ngettext("Resubmit %(count)d failed or expired request of batch %(batch)s?",
                             "Resubmit %(count)d failed or expired requests of batch %(batch)s?", count) % {
            "count": count, "batch": job}
        return self._confirm(request, title=_("Retry batch"), statement=statement,
                             note=_("They go into a later batch with their attempts reset."),
                             submit_label=ngettext("Yes, resubmit %(count)d request",
                                                   "Yes, resubmit %(count)d requests", count) % {"count": count},
                             cancel_url=back, next=back)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        job = self._operable(request, object_id)
        back = safe_next(request, reverse(f"{self.admin_site.name}:batches_batchjob_change", args=[job.pk]))
        if request.method == "POST":
            try:
                done = pipeline.cancel_batch(job, Actor.from_request(request, AuditSource.ADMIN))
            except (pipeline.ActionError, ProviderError) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, _("Batch %(batch)s is now %(status)s.") % {
                    "batch": done, "status": done.get_status_display()}, messages.SUCCESS)
            return HttpResponseRedirect(back)
        statement = ngettext("Cancel 1 batch (%(batch)s) with %(count)d request?",
                             "Cancel 1 batch (%(batch)s) with %(count)d requests?", job.request_count) % {
            "batch": job, "count": job.request_count}
        note = (_("It has not been submitted yet: its requests fail with 'batch_cancelled'.")
                if job.status == BatchStatus.PENDING else
                _("The provider is asked to cancel it; lines it already finished are kept."))
        return self._confirm(request, title=_("Cancel batch"), statement=statement, note=note,
                             submit_label=_("Yes, cancel it"), cancel_url=back, next=back)

    # --- changelist actions (the count is stated on Django's action confirmation via the message) --------

    @admin.action(description=_("Retry failed and expired requests"), permissions=["operate"])
    def retry_batches(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            jobs = list(queryset)
            count = sum(pipeline.retryable_requests(job).count() for job in jobs)
            return self._confirm_selection(request, jobs, "retry_batches", ngettext(
                "Resubmit %(count)d failed or expired request of the %(batches)d selected batches?",
                "Resubmit %(count)d failed or expired requests of the %(batches)d selected batches?", count)
                % {"count": count, "batches": len(jobs)})
        actor = Actor.from_request(request, AuditSource.ADMIN)
        total = 0
        for job in queryset:
            try:
                total += pipeline.retry_batch(job, actor)
            except pipeline.ActionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, ngettext("%d request resubmitted.", "%d requests resubmitted.", total) % total)
        return None

    @admin.action(description=_("Cancel batches"), permissions=["operate"])
    def cancel_batches(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            jobs = list(queryset)
            return self._confirm_selection(request, jobs, "cancel_batches", ngettext(
                "Cancel %(count)d batch?", "Cancel %(count)d batches?", len(jobs)) % {"count": len(jobs)})
        actor = Actor.from_request(request, AuditSource.ADMIN)
        done = 0
        for job in queryset:
            try:
                pipeline.cancel_batch(job, actor)
                done += 1
            except (pipeline.ActionError, ProviderError) as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, ngettext("%d batch cancelled.", "%d batches cancelled.", done) % done)
        return None

    def _confirm_selection(self, request: HttpRequest, jobs: list[BatchJob], action: str,
                           statement: str) -> HttpResponse:
        return TemplateResponse(request, "batches/admin/confirm_selection.html", {
            **self.admin_site.each_context(request), "opts": self.opts, "title": _("Confirm"),
            "statement": statement, "jobs": jobs, "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})


@admin.register(AIProcessingRequest)
class AIProcessingRequestAdmin(CsvExportMixin, BigTableAdmin):
    list_display = ["custom_id", "company", "job_type", "model", "status", "attempts", "error_code", "cost_label",
                    "requested"]
    list_filter = ["status", RequestedFilter]
    list_select_related = ["company"]
    # Exact custom id only: an indexed (unique) lookup; no LIKE over bodies.
    search_fields = ["=custom_id"]
    search_help_text = _("An exact custom id.")
    date_hierarchy = "requested_at"
    raw_id_fields = ["batch", "company"]
    list_only = ["id", "custom_id", "company", "company__name", "job_type", "model", "status", "attempts",
                 "error_code", "cost", "requested_at"]
    actions = ["export_selected_csv"]
    csv_fields = ["custom_id", "company__name", "job_type", "model", "endpoint", "status", "attempts", "batch_id",
                  "error_code", "error_message", "input_tokens", "output_tokens", "cost", "sync_cost", "requested_at",
                  "completed_at"]
    readonly_fields = ["body_json", "response_body_json", "metadata_json"]
    exclude = ["body", "response_body", "metadata"]

    @admin.display(description=_("cost at batch price"), ordering="cost")
    def cost_label(self, request_row: AIProcessingRequest) -> str:
        return money(request_row.cost)

    @admin.display(description=_("requested"), ordering="requested_at")
    def requested(self, request_row: AIProcessingRequest) -> str:
        return compact_time(request_row.requested_at)

    @admin.display(description=_("request body"))
    def body_json(self, request_row: AIProcessingRequest) -> str:
        return pretty_json(request_row.body)

    @admin.display(description=_("response body"))
    def response_body_json(self, request_row: AIProcessingRequest) -> str:
        return pretty_json(request_row.response_body)

    @admin.display(description=_("metadata"))
    def metadata_json(self, request_row: AIProcessingRequest) -> str:
        return pretty_json(request_row.metadata)



@admin.register(PipelineRun)
class PipelineRunAdmin(ReadOnlyAdmin):
    list_display = ["step", "started_at", "duration", "items", "queries", "errors"]
    list_filter = ["step"]
    date_hierarchy = "started_at"
