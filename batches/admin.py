"""Basic read-only admin registrations with the retry and cancel actions (the rich admin comes later)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from monitoring.audit import Actor
from monitoring.models import AuditSource

from . import pipeline
from .models import AIProcessingRequest, BatchJob, Company, PipelineRun
from .providers import ProviderError


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "min_batch_size", "max_wait", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name"]


@admin.register(BatchJob)
class BatchJobAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "company", "status", "job_type", "model", "request_count", "completed_count",
                    "failed_count", "cost", "savings", "created_at"]
    list_filter = ["status", "job_type", "model"]
    list_select_related = ["company"]
    date_hierarchy = "created_at"
    actions = ["retry_batches", "cancel_batches"]

    def has_operate_permission(self, request) -> bool:
        return request.user.has_perm("batches.operate_batchjob")

    @admin.action(description=_("Retry failed and expired requests"), permissions=["operate"])
    def retry_batches(self, request, queryset) -> None:
        actor = Actor.from_request(request, AuditSource.ADMIN)
        total, refused = 0, []
        for job in queryset:
            try:
                total += pipeline.retry_batch(job, actor)
            except pipeline.ActionError as exc:
                refused.append(str(exc))
        self.message_user(request, ngettext("%d request resubmitted.", "%d requests resubmitted.", total) % total)
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)

    @admin.action(description=_("Cancel batches"), permissions=["operate"])
    def cancel_batches(self, request, queryset) -> None:
        actor = Actor.from_request(request, AuditSource.ADMIN)
        done = 0
        for job in queryset:
            try:
                pipeline.cancel_batch(job, actor)
                done += 1
            except (pipeline.ActionError, ProviderError) as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, ngettext("%d batch cancelled.", "%d batches cancelled.", done) % done)


@admin.register(AIProcessingRequest)
class AIProcessingRequestAdmin(ReadOnlyAdmin):
    list_display = ["custom_id", "company", "job_type", "model", "status", "attempts", "error_code", "cost",
                    "requested_at"]
    list_filter = ["status", "job_type", "model"]
    list_select_related = ["company"]
    raw_id_fields = ["batch", "company"]


@admin.register(PipelineRun)
class PipelineRunAdmin(ReadOnlyAdmin):
    list_display = ["step", "started_at", "duration", "items", "queries", "errors"]
    list_filter = ["step"]
