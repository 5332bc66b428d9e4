"""Models of the batches app: companies, AI processing requests, provider batches and pipeline runs."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .querysets import AIProcessingRequestQuerySet, BatchJobQuerySet, CompanyQuerySet

COST = {"max_digits": 20, "decimal_places": 10}


def new_custom_id() -> str:
    return f"req-{uuid.uuid4().hex}"


class Company(models.Model):
    """The tenant AI requests belong to; each has its own batching thresholds."""

    name = models.CharField(_("name"), max_length=200)
    is_active = models.BooleanField(_("active"), default=True)
    min_batch_size = models.PositiveIntegerField(
        _("minimum batch size"), null=True, blank=True,
        help_text=_("Requests a group needs before it is submitted; empty uses BATCHES['MIN_BATCH_SIZE']."))
    max_wait = models.PositiveIntegerField(
        _("maximum wait (seconds)"), null=True, blank=True,
        help_text=_("Longest a request waits for a full group; empty uses BATCHES['MAX_WAIT']."))
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    objects = CompanyQuerySet.as_manager()

    class Meta:
        verbose_name = _("company")
        verbose_name_plural = _("companies")
        ordering = ["name"]
        indexes = [models.Index(fields=["is_active", "name"], name="batches_company_active_idx")]

    def __str__(self) -> str:
        return self.name


class RequestStatus(models.TextChoices):
    PENDING_BATCHING = "pending_batching", _("Pending batching")
    BATCHING_IN_PROGRESS = "batching_in_progress", _("Batching in progress")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    RETRY_SCHEDULED = "retry_scheduled", _("Retry scheduled")


class Endpoint(models.TextChoices):
    CHAT_COMPLETIONS = "/v1/chat/completions", "/v1/chat/completions"
    RESPONSES = "/v1/responses", "/v1/responses"
    EMBEDDINGS = "/v1/embeddings", "/v1/embeddings"
    COMPLETIONS = "/v1/completions", "/v1/completions"
    MODERATIONS = "/v1/moderations", "/v1/moderations"


class AIProcessingRequest(models.Model):
    """One AI request submitted by host code, carried through provider batches to its result."""

    # Indexed by (company, requested_at) below; a separate FK index would only slow the bulk updates.
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="ai_requests",
                                verbose_name=_("company"), db_index=False)
    job_type = models.CharField(_("job type"), max_length=64,
                                help_text=_("What the request is for, e.g. sentiment, category, summary."))
    model = models.CharField(_("model"), max_length=100)
    endpoint = models.CharField(_("endpoint"), max_length=64, choices=Endpoint.choices,
                                default=Endpoint.CHAT_COMPLETIONS)
    body = models.JSONField(_("request body"))
    line_bytes = models.PositiveIntegerField(_("JSONL line size"), default=0, editable=False,
                                             help_text=_("Bytes of this request's line in the input file."))
    # Unique through Meta.constraints, not unique=True: on PostgreSQL that would add a second (LIKE pattern) index,
    # one more entry for each of the 100,000s of rows the claim and process rewrite; lookups are exact only.
    custom_id = models.CharField(_("custom id"), max_length=64, default=new_custom_id)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True,
                                help_text=_("Host references, e.g. the chat session this request analyses."))
    status = models.CharField(_("status"), max_length=24, choices=RequestStatus.choices,
                              default=RequestStatus.PENDING_BATCHING, editable=False)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0, editable=False)
    priority = models.SmallIntegerField(_("priority"), default=0,
                                        help_text=_("Higher goes into a batch first."))
    # No database-level FOREIGN KEY: PostgreSQL checks one per changed row (a deferred trigger event and a
    # ``SELECT ... FOR KEY SHARE`` of the batch each), 0.6-1.3 s of the create step's claim of 100,000 rows. The
    # column is written only by the pipeline, with ids of batches it inserted in the same transaction (or NULL), and
    # deleting a batch still sets its requests' batch to NULL through Django's on_delete.
    batch = models.ForeignKey("BatchJob", on_delete=models.SET_NULL, null=True, blank=True, editable=False,
                              related_name="requests", verbose_name=_("batch"), db_index=False,
                              db_constraint=False)
    response_body = models.JSONField(_("response body"), null=True, blank=True, editable=False)
    error_code = models.CharField(_("error code"), max_length=64, blank=True, default="", editable=False)
    error_message = models.TextField(_("error message"), blank=True, default="", editable=False)
    input_tokens = models.PositiveIntegerField(_("input tokens"), default=0, editable=False)
    cached_input_tokens = models.PositiveIntegerField(_("cached input tokens"), default=0, editable=False)
    output_tokens = models.PositiveIntegerField(_("output tokens"), default=0, editable=False)
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), default=0, editable=False)
    cost = models.DecimalField(_("cost at batch price"), **COST, null=True, blank=True, editable=False)
    sync_cost = models.DecimalField(_("cost at synchronous price"), **COST, null=True, blank=True, editable=False)
    requested_at = models.DateTimeField(_("requested"), default=timezone.now, editable=False)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True, editable=False)

    objects = AIProcessingRequestQuerySet.as_manager()

    class Meta:
        verbose_name = _("AI processing request")
        verbose_name_plural = _("AI processing requests")
        indexes = [
            models.Index(fields=["status", "requested_at"], name="batches_req_status_req_idx"),
            # One index serves both "requests of a batch" and "requests of these batches in this status": every
            # index costs an entry per row in the claim and process updates (both rewrite 100,000s of rows).
            models.Index(fields=["batch", "status"], name="batches_req_batch_status_idx"),
            # Partial: only scheduled retries are looked up by next attempt, and every other row skips it.
            models.Index(fields=["next_attempt_at"], name="batches_req_retry_due_idx",
                         condition=models.Q(status="retry_scheduled")),
            # A tenant is 1 in 1,000s of rows: without this index its page (and the page's COUNT) scans the table.
            models.Index(fields=["company", "requested_at"], name="batches_req_company_idx"),
            # The default list order and the time-range filters. A job type (or model) is one of a few values, so
            # its page walks this index backwards and stops after one page of matches: a (job_type, requested_at)
            # index saved nothing there at 1M rows and cost an entry per row in every claim and process update.
            models.Index(fields=["requested_at"], name="batches_req_requested_idx"),
        ]
        constraints = [models.UniqueConstraint(fields=["custom_id"], name="batches_req_custom_id_uniq")]

    def __str__(self) -> str:
        return f"{self.job_type} {self.custom_id} ({self.status})"


class BatchStatus(models.TextChoices):
    # Local states, before the provider knows the batch.
    PENDING = "pending", _("Pending submission")
    # The provider's states, mirrored exactly.
    VALIDATING = "validating", _("Validating")
    IN_PROGRESS = "in_progress", _("In progress")
    FINALIZING = "finalizing", _("Finalizing")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    EXPIRED = "expired", _("Expired")
    CANCELLING = "cancelling", _("Cancelling")
    CANCELLED = "cancelled", _("Cancelled")


LOCAL_STATES = (BatchStatus.PENDING,)
IN_FLIGHT_STATES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING,
                    BatchStatus.CANCELLING)
TERMINAL_STATES = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED)
PROVIDER_TIMESTAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                       "cancelling_at", "cancelled_at", "expires_at")


class BatchJob(models.Model):
    """One provider batch: the requests of one company, model and endpoint in one input file."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="batch_jobs",
                                verbose_name=_("company"))
    provider = models.CharField(_("provider"), max_length=64, default="openai", editable=False)
    provider_batch_id = models.CharField(_("provider batch id"), max_length=128, null=True, blank=True,
                                         unique=True, editable=False)
    status = models.CharField(_("status"), max_length=16, choices=BatchStatus.choices,
                              default=BatchStatus.PENDING, editable=False)
    job_type = models.CharField(_("job type"), max_length=64, blank=True, default="", editable=False,
                                help_text=_("The job type of the requests, or 'mixed'."))
    endpoint = models.CharField(_("endpoint"), max_length=64, choices=Endpoint.choices, editable=False)
    model = models.CharField(_("model"), max_length=100, editable=False)
    input_file_id = models.CharField(_("input file id"), max_length=128, blank=True, default="", editable=False)
    output_file_id = models.CharField(_("output file id"), max_length=128, blank=True, default="",
                                      editable=False)
    error_file_id = models.CharField(_("error file id"), max_length=128, blank=True, default="", editable=False)
    request_count = models.PositiveIntegerField(_("requests"), default=0, editable=False)
    completed_count = models.PositiveIntegerField(_("completed requests"), default=0, editable=False)
    failed_count = models.PositiveIntegerField(_("failed requests"), default=0, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now, editable=False)
    submitted_at = models.DateTimeField(_("submitted"), null=True, blank=True, editable=False,
                                        help_text=_("When the provider accepted the batch (its created_at)."))
    in_progress_at = models.DateTimeField(_("in progress since"), null=True, blank=True, editable=False)
    finalizing_at = models.DateTimeField(_("finalizing since"), null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True, editable=False)
    failed_at = models.DateTimeField(_("failed"), null=True, blank=True, editable=False)
    expired_at = models.DateTimeField(_("expired"), null=True, blank=True, editable=False)
    cancelling_at = models.DateTimeField(_("cancelling since"), null=True, blank=True, editable=False)
    cancelled_at = models.DateTimeField(_("cancelled"), null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True, editable=False)
    submit_started_at = models.DateTimeField(
        _("submission started"), null=True, blank=True, editable=False,
        help_text=_("Lease of the create run submitting this batch (see BATCHES['SUBMIT_LEASE'])."))
    results_processed_at = models.DateTimeField(_("results processed"), null=True, blank=True, editable=False)
    cost = models.DecimalField(_("cost at batch price"), **COST, default=0, editable=False)
    sync_cost = models.DecimalField(_("cost at synchronous price"), **COST, default=0, editable=False)
    savings = models.DecimalField(_("savings"), **COST, default=0, editable=False)
    input_tokens = models.PositiveBigIntegerField(_("input tokens"), default=0, editable=False)
    output_tokens = models.PositiveBigIntegerField(_("output tokens"), default=0, editable=False)
    error_summary = models.JSONField(_("errors by code"), default=dict, blank=True, editable=False)
    provider_errors = models.JSONField(_("provider errors"), default=list, blank=True, editable=False,
                                       help_text=_("Batch-level validation errors reported by the provider."))
    last_error = models.TextField(_("last provider call error"), blank=True, default="", editable=False)
    provider_error_count = models.PositiveIntegerField(_("provider call errors"), default=0, editable=False)
    status_history = models.JSONField(_("status history"), default=list, blank=True, editable=False)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True, editable=False)

    objects = BatchJobQuerySet.as_manager()

    class Meta:
        verbose_name = _("batch job")
        verbose_name_plural = _("batch jobs")
        permissions = [("operate_batchjob", _("Can retry and cancel batch jobs"))]
        indexes = [
            models.Index(fields=["status", "created_at"], name="batches_job_status_idx"),
            models.Index(fields=["created_at"], name="batches_job_created_idx"),
            models.Index(fields=["company", "created_at"], name="batches_job_company_idx"),
            models.Index(fields=["job_type", "created_at"], name="batches_job_jobtype_idx"),
            models.Index(fields=["model", "created_at"], name="batches_job_model_idx"),
            models.Index(fields=["status", "results_processed_at"], name="batches_job_unprocessed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.status})"

    @property
    def label(self) -> str:
        """The provider's batch id, or "local batch N" before the provider has one."""
        return self.provider_batch_id or f"local batch {self.pk}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES


class PipelineStep(models.TextChoices):
    CREATE = "create", _("Create batches")
    CHECK = "check", _("Check batches")
    PROCESS = "process", _("Process results")
    RETRY = "retry", _("Retry failures")
    EXPIRE = "expire", _("Expire batches")


class PipelineRun(models.Model):
    """One run of a pipeline step: how long it took, what it handled, how many queries, what failed."""

    step = models.CharField(_("step"), max_length=16, choices=PipelineStep.choices, editable=False)
    started_at = models.DateTimeField(_("started"), editable=False)
    duration = models.FloatField(_("duration (seconds)"), editable=False)
    items = models.PositiveIntegerField(_("items"), default=0, editable=False,
                                        help_text=_("Requests or batches the run handled."))
    queries = models.PositiveIntegerField(_("database queries"), default=0, editable=False)
    errors = models.PositiveIntegerField(_("errors"), default=0, editable=False)
    detail = models.JSONField(_("detail"), default=dict, blank=True, editable=False)

    class Meta:
        verbose_name = _("pipeline run")
        verbose_name_plural = _("pipeline runs")
        indexes = [models.Index(fields=["step", "-started_at"], name="batches_run_step_idx"),
                   models.Index(fields=["-started_at"], name="batches_run_started_idx")]

    def __str__(self) -> str:
        return f"{self.step} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class ProviderCircuit(models.Model):
    """Circuit breaker per provider: consecutive call errors and until when calls are paused."""

    provider = models.CharField(_("provider"), max_length=64, unique=True)
    consecutive_failures = models.PositiveIntegerField(_("consecutive failures"), default=0)
    opened_until = models.DateTimeField(_("open until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True, default="")
    last_failure_at = models.DateTimeField(_("last failure"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("provider circuit")
        verbose_name_plural = _("provider circuits")

    def __str__(self) -> str:
        return f"{self.provider}: {self.consecutive_failures} failures"

    def is_open(self, now) -> bool:
        return self.opened_until is not None and self.opened_until > now
