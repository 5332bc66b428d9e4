"""Durable records of background work: job runs, queue state and the audit trail."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from .querysets import JobRunQuerySet


class JobState(models.TextChoices):
    PENDING = "PENDING", _("Pending")
    RECEIVED = "RECEIVED", _("Received")
    STARTED = "STARTED", _("Started")
    RETRY = "RETRY", _("Retry")
    SUCCESS = "SUCCESS", _("Success")
    FAILURE = "FAILURE", _("Failure")
    REVOKED = "REVOKED", _("Revoked")
    LOST = "LOST", _("Lost")


# States only move forward along this order, so a duplicate or late event never regresses a row.
# RETRY ranks above STARTED: the retried attempt is received and started again under the same task id
# and must keep showing RETRY until it ends. The terminal states share the top rank; the first one wins,
# except that LOST (set by the sweeper) yields to a real outcome reported later by a slow worker.
STATE_RANK: dict[str, int] = {
    JobState.PENDING: 0,
    JobState.RECEIVED: 1,
    JobState.STARTED: 2,
    JobState.RETRY: 3,
    JobState.LOST: 4,
    JobState.SUCCESS: 5,
    JobState.FAILURE: 5,
    JobState.REVOKED: 5,
}
ACTIVE_STATES = (JobState.RECEIVED, JobState.STARTED, JobState.RETRY)
FINISHED_STATES = (JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED, JobState.LOST)


def storable(text: str) -> bool:
    """Whether a text could be stored: PostgreSQL text cannot hold NUL, and a query holding one fails.

    So no stored task id or queue name contains NUL: a lookup of one finds nothing without asking the database.
    """
    return "\x00" not in text


class JobOrigin(models.TextChoices):
    CELERY = "celery", _("Celery task")
    TRACKED = "tracked", _("Tracked job")


class JobRun(models.Model):
    """One execution of a background job, from publication to its outcome (one row per task id)."""

    # Unique through Meta.constraints rather than unique=True: on PostgreSQL that would add a second,
    # varchar_pattern_ops index for LIKE queries no read path makes, updated by every capture write.
    task_id = models.CharField(_("task id"), max_length=255, editable=False)
    task_name = models.CharField(_("task name"), max_length=255, editable=False,
                                 help_text=_("The Celery task name, or the job type of a tracked job."))
    origin = models.CharField(_("origin"), max_length=16, choices=JobOrigin.choices, default=JobOrigin.CELERY,
                              editable=False)
    queue = models.CharField(_("queue"), max_length=255, blank=True, default="", editable=False)
    routing_key = models.CharField(_("routing key"), max_length=255, blank=True, default="", editable=False)
    state = models.CharField(_("state"), max_length=16, choices=JobState.choices, default=JobState.PENDING,
                             editable=False)
    args = models.JSONField(_("positional arguments"), null=True, blank=True, editable=False)
    kwargs = models.JSONField(_("keyword arguments"), null=True, blank=True, editable=False)
    arguments_truncated = models.BooleanField(
        _("arguments truncated"), default=False, editable=False,
        help_text=_("Set when the arguments were over MONITORING['MAX_ARGUMENTS_BYTES'] (or not JSON) and only "
                    "a preview is stored."))
    result = models.TextField(_("result summary"), blank=True, default="", editable=False)
    exception_type = models.CharField(_("exception type"), max_length=255, blank=True, default="",
                                      editable=False)
    exception_message = models.TextField(_("exception message"), blank=True, default="", editable=False)
    traceback = models.TextField(_("traceback"), blank=True, default="", editable=False)
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="", editable=False)
    retries = models.PositiveIntegerField(_("retries"), default=0, editable=False)
    priority = models.PositiveSmallIntegerField(_("priority"), null=True, blank=True, editable=False)
    eta = models.DateTimeField(_("ETA"), null=True, blank=True, editable=False)
    expires = models.DateTimeField(_("expires"), null=True, blank=True, editable=False)
    parent_id = models.CharField(_("parent id"), max_length=255, blank=True, default="", editable=False)
    root_id = models.CharField(_("root id"), max_length=255, blank=True, default="", editable=False)
    group_id = models.CharField(_("group id"), max_length=255, blank=True, default="", editable=False)
    retry_of = models.CharField(_("retry of"), max_length=255, blank=True, default="", editable=False,
                                help_text=_("Task id of the job an operator retried to create this one."))
    created_at = models.DateTimeField(_("first seen"), editable=False, db_index=False,
                                      help_text=_("When the first event about this job was recorded."))
    published_at = models.DateTimeField(_("published"), null=True, blank=True, editable=False)
    received_at = models.DateTimeField(_("received"), null=True, blank=True, editable=False)
    started_at = models.DateTimeField(_("started"), null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(_("updated"), editable=False)
    wait_time = models.FloatField(_("wait time (s)"), null=True, blank=True, editable=False,
                                  help_text=_("Seconds from publication (or receipt) to start."))
    runtime = models.FloatField(_("runtime (s)"), null=True, blank=True, editable=False)

    objects = JobRunQuerySet.as_manager()

    class Meta:
        verbose_name = _("job run")
        verbose_name_plural = _("job runs")
        ordering = ("-created_at", "-id")
        get_latest_by = "created_at"
        permissions = [
            ("operate_jobrun", _("Can retry, cancel and clear job runs")),
        ]
        constraints = [
            # The capture's upsert (ON CONFLICT (task_id)) relies on it; exact task id lookups use it.
            models.UniqueConstraint(fields=["task_id"], name="jobrun_task_id_uniq"),
        ]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="jobrun_created_idx"),
            models.Index(fields=["state", "-created_at"], name="jobrun_state_created_idx"),
            models.Index(fields=["task_name", "-created_at"], name="jobrun_task_created_idx"),
            models.Index(fields=["queue", "-created_at"], name="jobrun_queue_created_idx"),
            models.Index(fields=["worker", "-created_at"], name="jobrun_worker_created_idx"),
            # Partial indexes on sparse columns: most rows have no exception, parent or retry link, and
            # are never active for long, so these cost next to nothing on the capture's write path.
            models.Index(fields=["exception_type", "-created_at"], name="jobrun_exc_created_idx",
                         condition=~models.Q(exception_type="")),
            models.Index(fields=["-finished_at"], name="jobrun_finished_idx"),
            models.Index(fields=["task_name", "-finished_at"], name="jobrun_task_finished_idx"),
            models.Index(fields=["queue", "state"], name="jobrun_queue_state_idx",
                         condition=models.Q(state__in=["PENDING", "RECEIVED", "STARTED", "RETRY"])),
            models.Index(fields=["state", "started_at"], name="jobrun_active_started_idx",
                         condition=models.Q(state__in=["RECEIVED", "STARTED", "RETRY"])),
            # No root_id index: no read path looks a job up by its root, and every Celery job has a root (a
            # top-level job is its own), so such an index took an entry on every capture write (0009).
            models.Index(fields=["parent_id"], name="jobrun_parent_idx", condition=~models.Q(parent_id="")),
            models.Index(fields=["retry_of"], name="jobrun_retry_of_idx", condition=~models.Q(retry_of="")),
            # Read side: the roll-up task finds late writes by updated_at; the timeline and the
            # started-at ordering of the jobs list walk started_at.
            models.Index(fields=["updated_at"], name="jobrun_updated_idx"),
            models.Index(fields=["-started_at", "-id"], name="jobrun_started_idx"),
            models.Index(fields=["task_name", "-started_at"], name="jobrun_task_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.state}"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class QueueState(models.Model):
    """Persisted operator state of a queue (a pause survives worker restarts)."""

    name = models.CharField(_("queue"), max_length=255, unique=True)
    paused = models.BooleanField(_("paused"), default=False)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)
    paused_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+", verbose_name=_("paused by"))
    paused_workers = models.JSONField(
        _("paused workers"), default=list, blank=True,
        help_text=_("Workers that consumed the queue when it was paused (or started while it was paused); "
                    "resume tells exactly these to consume it again."))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("queue state")
        verbose_name_plural = _("queue states")
        ordering = ("name",)
        permissions = [
            ("operate_queue", _("Can pause, resume and purge queues")),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({'paused' if self.paused else 'active'})"


class AuditSource(models.TextChoices):
    API = "api", _("API")
    ADMIN = "admin", _("Admin")
    COMMAND = "command", _("Management command")
    SYSTEM = "system", _("System")


class AuditEvent(models.Model):
    """Who did what, from where, with which parameters and outcome. Never edited after it is written."""

    created_at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+", verbose_name=_("who"))
    actor_name = models.CharField(_("who (name)"), max_length=150, blank=True, default="",
                                  help_text=_("Kept when the user is deleted; the OS user for commands."))
    source = models.CharField(_("from"), max_length=16, choices=AuditSource.choices)
    client_address = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    action = models.CharField(_("action"), max_length=64)
    targets = models.JSONField(_("targets"), default=list, blank=True)
    parameters = models.JSONField(_("parameters"), default=dict, blank=True)
    outcome = models.CharField(_("outcome"), max_length=16)
    detail = models.TextField(_("detail"), blank=True, default="")
    new_task_ids = models.JSONField(_("new task ids"), default=list, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["action", "-created_at"], name="audit_action_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action} {self.outcome}"


class BulkStatus(models.TextChoices):
    PREVIEW = "preview", _("Previewed")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class BulkOperation(models.Model):
    """One operator action over many jobs: the ids are frozen when it is previewed, progress is counted."""

    action = models.CharField(_("action"), max_length=32, editable=False)
    parameters = models.JSONField(_("parameters"), default=dict, blank=True, editable=False)
    selection = models.JSONField(_("selection"), default=dict, blank=True, editable=False,
                                 help_text=_("The ids or the filter the operator chose, as submitted."))
    task_ids = models.JSONField(_("task ids"), default=list, blank=True, editable=False,
                                help_text=_("The jobs that matched at preview time; only these are acted on."))
    total = models.PositiveIntegerField(_("total"), default=0, editable=False)
    processed = models.PositiveIntegerField(_("processed"), default=0, editable=False)
    succeeded = models.PositiveIntegerField(_("succeeded"), default=0, editable=False)
    skipped = models.PositiveIntegerField(_("skipped"), default=0, editable=False)
    failed = models.PositiveIntegerField(_("failed"), default=0, editable=False)
    problems = models.JSONField(_("problems"), default=list, blank=True, editable=False,
                                help_text=_("Skipped or failed jobs with the reason (the first ones only)."))
    new_task_ids = models.JSONField(_("new task ids"), default=list, blank=True, editable=False)
    status = models.CharField(_("status"), max_length=16, choices=BulkStatus.choices, default=BulkStatus.PREVIEW,
                              editable=False)
    background_task_id = models.CharField(_("background task id"), max_length=255, blank=True, default="",
                                          editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", verbose_name=_("created by"))
    created_by_name = models.CharField(_("created by (name)"), max_length=150, blank=True, default="",
                                       editable=False)
    source = models.CharField(_("from"), max_length=16, choices=AuditSource.choices, editable=False)
    client_address = models.GenericIPAddressField(_("client address"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("bulk operation")
        verbose_name_plural = _("bulk operations")
        ordering = ("-created_at", "-id")
        indexes = [
            models.Index(fields=["status", "-created_at"], name="bulkop_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} x{self.total} ({self.status})"

    @property
    def progress(self) -> float:
        """Share of the frozen jobs already processed (0.0 to 1.0)."""
        return self.processed / self.total if self.total else 1.0


class IdempotencyRecord(models.Model):
    """The outcome of an action submitted with an idempotency key, replayed when the key comes again."""

    key = models.CharField(_("key"), max_length=255, unique=True, editable=False)
    fingerprint = models.CharField(_("request fingerprint"), max_length=64, editable=False,
                                   help_text=_("Hash of the action, target and parameters the key was first used for."))
    action = models.CharField(_("action"), max_length=32, editable=False)
    target = models.CharField(_("target"), max_length=255, editable=False)
    new_task_id = models.CharField(_("new task id"), max_length=255, blank=True, default="", editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"), editable=False)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        indexes = [
            models.Index(fields=["expires_at"], name="idempotency_expires_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.target} [{self.key}]"


# Upper bounds (seconds) of the runtime histogram kept in every rollup bucket: a fixed log scale
# (1-2.5-5 steps, as Prometheus' default buckets) plus an overflow bucket, so p50/p95 over any range come
# from summed histograms instead of millions of rows. Changing them needs a rebuild of the rollups.
HISTOGRAM_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
                                       100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0)
HISTOGRAM_FIELDS: tuple[str, ...] = tuple(f"h{i:02d}" for i in range(len(HISTOGRAM_BOUNDS) + 1))
OUTCOME_FIELDS: tuple[str, ...] = ("succeeded", "failed", "revoked", "lost")


class RollupGranularity(models.IntegerChoices):
    FIVE_MINUTES = 300, _("5 minutes")
    HOUR = 3_600, _("1 hour")
    DAY = 86_400, _("1 day")


class JobRollup(models.Model):
    """Finished jobs of one task name and queue in one time bucket: counts by outcome and runtimes.

    Maintained from ``JobRun`` by ``monitoring.rollups`` (periodic task, idempotent recompute).
    """

    granularity = models.PositiveIntegerField(_("granularity (s)"), choices=RollupGranularity.choices)
    bucket = models.DateTimeField(_("bucket start"))
    task_name = models.CharField(_("task name"), max_length=255)
    queue = models.CharField(_("queue"), max_length=255, blank=True, default="")
    succeeded = models.PositiveIntegerField(_("succeeded"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    revoked = models.PositiveIntegerField(_("revoked"), default=0)
    lost = models.PositiveIntegerField(_("lost"), default=0)
    runtime_sum = models.FloatField(_("runtime sum (s)"), default=0.0)
    runtime_count = models.PositiveIntegerField(_("runtimes counted"), default=0)

    class Meta:
        verbose_name = _("job rollup")
        verbose_name_plural = _("job rollups")
        ordering = ("granularity", "bucket", "task_name", "queue")
        constraints = [
            models.UniqueConstraint(fields=["granularity", "bucket", "task_name", "queue"],
                                    name="jobrollup_bucket_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}@{self.queue or '-'} {self.bucket:%Y-%m-%d %H:%M} ({self.granularity}s)"


# One column per histogram bucket (h00 counts runtimes <= 5 ms, h20 those over the last bound): plain
# integer columns let the database SUM them, which arrays or JSON would not do portably.
for _index, _field in enumerate(HISTOGRAM_FIELDS):
    _label = (f"<= {HISTOGRAM_BOUNDS[_index]:g} s" if _index < len(HISTOGRAM_BOUNDS)
              else f"> {HISTOGRAM_BOUNDS[-1]:g} s")
    JobRollup.add_to_class(_field, models.PositiveIntegerField(_("runtimes %(label)s") % {"label": _label},
                                                               default=0))


class ErrorRollup(models.Model):
    """Failures of one error group (exception type and normalised message), task name and queue that
    finished in one time bucket: their count, first and last finish and the smallest full message.

    Maintained with ``JobRollup`` by ``monitoring.rollups`` (same buckets, windows and covered span).
    """

    granularity = models.PositiveIntegerField(_("granularity (s)"), choices=RollupGranularity.choices)
    bucket = models.DateTimeField(_("bucket start"))
    exception_type = models.CharField(_("exception type"), max_length=255)
    message = models.TextField(_("normalised message"))
    task_name = models.CharField(_("task name"), max_length=255)
    queue = models.CharField(_("queue"), max_length=255, blank=True, default="")
    count = models.PositiveIntegerField(_("failures"), default=0)
    first_seen = models.DateTimeField(_("first failure"))
    last_seen = models.DateTimeField(_("last failure"))
    example = models.TextField(_("example message"), blank=True, default="")

    class Meta:
        verbose_name = _("error rollup")
        verbose_name_plural = _("error rollups")
        indexes = [models.Index(fields=["granularity", "bucket"], name="errorrollup_bucket_idx")]

    def __str__(self) -> str:
        return f"{self.exception_type}: {self.message[:40]} {self.bucket:%Y-%m-%d %H:%M} ({self.granularity}s)"


class RollupState(models.Model):
    """The span of time the rollups cover completely (one row); reads go to ``JobRun`` outside it."""

    covered_from = models.DateTimeField(_("covered from"), null=True, blank=True)
    complete_until = models.DateTimeField(_("complete until"), null=True, blank=True)
    updated_mark = models.DateTimeField(_("late writes checked since"), null=True, blank=True,
                                        help_text=_("Job rows updated after this are re-checked for late "
                                                    "outcomes in buckets already rolled up."))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("rollup state")
        verbose_name_plural = _("rollup state")

    def __str__(self) -> str:
        return f"rollups {self.covered_from} - {self.complete_until}"


# --- alerts ---------------------------------------------------------------------------------------------

class AlertSeverity(models.TextChoices):
    LOW = "low", _("Low")
    MEDIUM = "medium", _("Medium")
    HIGH = "high", _("High")
    CRITICAL = "critical", _("Critical")


class AlertRule(models.Model):
    """A condition over a metric (validated against ``monitoring.registry``), checked every minute."""

    name = models.CharField(_("name"), max_length=200)
    metric = models.CharField(_("metric"), max_length=64,
                              help_text=_("What is measured; the allowed metrics come from the alert registry."))
    scope = models.CharField(_("scope"), max_length=32, default="all",
                             help_text=_("What the metric covers: all, a queue, a task name, a batch job type "
                                         "or a company (the kinds the metric accepts)."))
    scope_value = models.CharField(_("scope value"), max_length=255, blank=True, default="",
                                   help_text=_("The queue, task name, job type or company id; empty for all."))
    threshold = models.FloatField(_("threshold"),
                                  help_text=_("Percent for rates, seconds for times, jobs per hour for "
                                              "throughput, messages for depth, count for batches failed."))
    window = models.PositiveIntegerField(_("evaluation window (s)"), default=3_600,
                                         help_text=_("How far back the metric looks (ignored by queue depth, "
                                                     "stuck jobs and workers online, which are read now)."))
    min_samples = models.PositiveIntegerField(
        _("minimum samples"), default=0,
        help_text=_("Rates and averages only: fire only when the window holds at least this many finished jobs "
                    "(requests, batches for batch metrics); 0 fires on any. Others must leave it 0."))
    severity = models.CharField(_("severity"), max_length=16, choices=AlertSeverity.choices,
                                default=AlertSeverity.MEDIUM)
    channels = models.JSONField(
        _("notification channels"), default=list, blank=True,
        help_text=_('A list such as [{"type": "email", "to": ["ops@example.com"]}, {"type": "webhook", '
                    '"url": "https://hooks.example.com/x", "format": "slack"}]; format is json or slack.'))
    cooldown = models.PositiveIntegerField(_("cooldown (s)"), default=900,
                                           help_text=_("No new notification for this rule and scope within "
                                                       "this many seconds of the previous one."))
    notify_resolved = models.BooleanField(_("notify when resolved"), default=True)
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("alert rule")
        verbose_name_plural = _("alert rules")
        ordering = ("name", "id")
        indexes = [models.Index(fields=["enabled", "id"], name="alertrule_enabled_idx")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .alerts import RULE_FIELDS, rule_errors

        # Every field the service validates, from the service's own list: a hand-picked copy once left out a new
        # field, and the admin form then passed a value the service refused (a 500).
        errors = rule_errors({name: getattr(self, name) for name in RULE_FIELDS})
        if errors:
            raise ValidationError(errors)


class AlertState(models.TextChoices):
    FIRING = "firing", _("Firing")
    ACKNOWLEDGED = "acknowledged", _("Acknowledged")
    RESOLVED = "resolved", _("Resolved")


OPEN_ALERT_STATES = (AlertState.FIRING, AlertState.ACKNOWLEDGED)


class Alert(models.Model):
    """One breach of a rule for one scope: firing, maybe acknowledged, then resolved. Kept as history."""

    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts",
                             verbose_name=_("rule"), editable=False, db_index=False)  # alert_rule_scope_idx
    rule_name = models.CharField(_("rule name"), max_length=200, editable=False,
                                 help_text=_("Kept when the rule is deleted."))
    metric = models.CharField(_("metric"), max_length=64, editable=False)
    scope_key = models.CharField(_("scope"), max_length=300, editable=False)
    severity = models.CharField(_("severity"), max_length=16, choices=AlertSeverity.choices, editable=False)
    state = models.CharField(_("state"), max_length=16, choices=AlertState.choices, default=AlertState.FIRING,
                             editable=False)
    threshold = models.FloatField(_("threshold"), editable=False)
    value = models.FloatField(_("value when fired"), null=True, blank=True, editable=False)
    last_value = models.FloatField(_("latest value"), null=True, blank=True, editable=False)
    message = models.TextField(_("message"), editable=False)
    details = models.JSONField(_("details"), default=dict, blank=True, editable=False)
    fired_at = models.DateTimeField(_("fired"), editable=False)
    last_evaluated_at = models.DateTimeField(_("last evaluated"), editable=False)
    notified_at = models.DateTimeField(_("notified"), null=True, blank=True, editable=False,
                                       help_text=_("Empty when the cooldown of an earlier alert suppressed it."))
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True, editable=False)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+", verbose_name=_("acknowledged by"), editable=False)
    acknowledged_by_name = models.CharField(_("acknowledged by (name)"), max_length=150, blank=True, default="",
                                            editable=False)
    acknowledge_comment = models.TextField(_("acknowledgement comment"), blank=True, default="", editable=False)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True, editable=False)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", verbose_name=_("resolved by"), editable=False)
    resolved_by_name = models.CharField(_("resolved by (name)"), max_length=150, blank=True, default="",
                                        editable=False, help_text=_("Empty when the condition cleared by itself."))
    resolve_comment = models.TextField(_("resolution comment"), blank=True, default="", editable=False)

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ("-fired_at", "-id")
        permissions = [("operate_alert", _("Can acknowledge and resolve alerts"))]
        constraints = [
            # Deduplication: at most one open alert per rule and scope, whichever process evaluates.
            models.UniqueConstraint(fields=["rule", "scope_key"], name="alert_open_per_rule_scope_uniq",
                                    condition=~models.Q(state="resolved")),
        ]
        indexes = [
            models.Index(fields=["-fired_at", "-id"], name="alert_fired_idx"),
            models.Index(fields=["state", "-fired_at"], name="alert_state_fired_idx"),
            models.Index(fields=["severity", "-fired_at"], name="alert_severity_fired_idx"),
            models.Index(fields=["rule", "scope_key", "-fired_at"], name="alert_rule_scope_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_name} [{self.scope_key}] {self.state}"

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_ALERT_STATES


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")


class AlertDelivery(models.Model):
    """One notification of an alert through one channel: attempts, outcome and the last error."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("alert"),
                              editable=False, db_index=False)  # alertdelivery_alert_idx
    event = models.CharField(_("event"), max_length=16, choices=AlertState.choices, editable=False,
                             help_text=_("Which transition is announced: firing or resolved."))
    channel = models.JSONField(_("channel"), editable=False)
    channel_type = models.CharField(_("channel type"), max_length=16, editable=False)
    status = models.CharField(_("status"), max_length=16, choices=DeliveryStatus.choices,
                              default=DeliveryStatus.PENDING, editable=False)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0, editable=False)
    last_error = models.TextField(_("last error"), blank=True, default="", editable=False)
    created_at = models.DateTimeField(_("created"), editable=False)
    last_attempt_at = models.DateTimeField(_("last attempt"), null=True, blank=True, editable=False)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("alert delivery")
        verbose_name_plural = _("alert deliveries")
        ordering = ("created_at", "id")
        indexes = [
            models.Index(fields=["alert", "created_at"], name="alertdelivery_alert_idx"),
            models.Index(fields=["created_at"], name="alertdelivery_pending_idx", condition=models.Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.channel_type} {self.event} of alert {self.alert_id} ({self.status})"
