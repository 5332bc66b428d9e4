"""The ``MONITORING`` settings dict: documented defaults, read lazily, reset on ``setting_changed``.

Shaped after django-debug-toolbar's settings module: a host project sets only the keys it changes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Capture -------------------------------------------------------------------------------------------
    # Turn the Celery signal receivers off (records are then written only by track()).
    "CAPTURE_ENABLED": True,
    # Task names (fnmatch patterns) that are not recorded.
    "IGNORE_TASKS": (),
    # Events kept in a process before a flush is forced, and the longest an event waits for its flush.
    "BUFFER_SIZE": 200,
    "FLUSH_INTERVAL": 1.0,
    # Events kept while the database is unreachable; past this the oldest are dropped (and logged).
    "MAX_BUFFERED_EVENTS": 100_000,
    # The database alias the capture writes to.
    "DATABASE_ALIAS": "default",
    # Dotted path of a callable(value, *, task_name, field) -> value applied to args and kwargs before
    # they are stored or shown. The default masks values whose key looks like a secret.
    "MASKING_HOOK": "monitoring.masking.mask_sensitive",
    # Key fragments (case-insensitive) whose values the default masking hook replaces.
    "SENSITIVE_KEYS": ("password", "passwd", "secret", "token", "api_key", "apikey", "authorization",
                       "credential", "private_key", "ssn", "card_number"),
    # Stored size caps; a value over its cap is replaced by a truncated preview and flagged.
    "MAX_ARGUMENTS_BYTES": 8_192,
    "MAX_RESULT_CHARS": 2_048,
    "MAX_TRACEBACK_CHARS": 32_768,
    # Read side -----------------------------------------------------------------------------------------
    # A job active (received/started) longer than this many seconds is stuck.
    "STUCK_AFTER": 600,
    # A job still active this many seconds after its worker stopped answering is marked LOST.
    "LOST_AFTER": 3_600,
    # Days of job records kept by the retention task (0 keeps everything).
    "RETENTION_DAYS": 30,
    # Control -------------------------------------------------------------------------------------------
    # A bulk action over more jobs than this runs in the background (a Celery task) in batches.
    "BULK_SYNC_LIMIT": 1_000,
    # The most jobs one bulk action may select; a larger filter is rejected and must be narrowed.
    "BULK_MAX_ITEMS": 100_000,
    # Jobs acted on per batch (and per progress update) by a background bulk action.
    "BULK_BATCH_SIZE": 100,
    # Seconds a preview stays valid; confirming an older preview asks for a new one.
    "BULK_PREVIEW_TTL": 900,
    # Queue of the background bulk task (None: Celery's default queue).
    "CONTROL_QUEUE": None,
    # Seconds an idempotency key is remembered.
    "IDEMPOTENCY_TTL": 86_400,
    # Seconds within which an identical retry without a key (a double click) is treated as a duplicate.
    "DOUBLE_SUBMIT_WINDOW": 10,
    # Records deleted per statement by clear_jobs and clear().
    "CLEAR_BATCH_SIZE": 5_000,
    # Extra queue names operators may act on or retry into, besides configured routes/queues and those
    # seen in records (a queue only workers started with -Q know about).
    "KNOWN_QUEUES": (),
    # Seconds to wait for worker replies to control/inspect broadcasts.
    "CONTROL_TIMEOUT": 1.0,
    # Read side (continued) ----------------------------------------------------------------------------
    # Days of rollups kept (they outlive job records: long-range trends and Prometheus counters read them).
    "ROLLUP_RETENTION_DAYS": 400,
    # Seconds a finished job is given to reach the database (capture buffers events) before its
    # five-minute bucket is treated as complete by the roll-up task.
    "ROLLUP_SETTLE_SECONDS": 30,
    # Jobs per minute are measured over this many trailing seconds.
    "PROCESSING_RATE_WINDOW": 300,
    # The success rate on the metrics endpoint covers this many most recently finished jobs.
    "SUCCESS_RATE_SAMPLE": 1_000,
    # Completed/failed counts per queue on the metrics endpoint cover this many trailing seconds.
    "METRICS_WINDOW": 86_400,
    # Broker queue depths are cached this many seconds (Django cache).
    "DEPTH_CACHE_SECONDS": 5,
    # Worker inspection: reply timeout, and how long a reply is reused before it is refreshed.
    "WORKER_INSPECT_TIMEOUT": 1.0,
    "WORKER_CACHE_SECONDS": 5,
    # Dotted path of the Celery app to inspect (None: celery.current_app, the host's default app).
    "CELERY_APP": None,
    # Bars the timeline and the overlap detector consider at most (most recent first).
    "TIMELINE_MAX_BARS": 2_000,
    # Live streams (Server-Sent Events): seconds between events, open streams per process, and the
    # longest a stream stays open before the client is asked to reconnect (EventSource does so itself).
    "LIVE_INTERVAL": 2.0,
    "LIVE_MAX_STREAMS": 50,
    "LIVE_MAX_SECONDS": 300,
    # Prometheus /metrics: at most this many task names get their own label; the rest are "other".
    "PROMETHEUS_MAX_TASK_NAMES": 100,
    # Alerts ----------------------------------------------------------------------------------------------
    # Attempts per notification (the first included) and the backoff before attempt n+1:
    # ALERT_DELIVERY_BACKOFF * 2 ** (n - 1) seconds.
    "ALERT_DELIVERY_ATTEMPTS": 4,
    "ALERT_DELIVERY_BACKOFF": 30.0,
    # Seconds one webhook call or SMTP connection may take before the attempt counts as failed.
    "ALERT_DELIVERY_TIMEOUT": 10.0,
    # Queue of the delivery task (None: Celery's default queue).
    "ALERT_QUEUE": None,
    # Sender of alert emails (None: Django's DEFAULT_FROM_EMAIL).
    "ALERT_EMAIL_FROM": None,
    # A delivery still pending this many seconds after its last attempt (its message was lost, or the broker
    # was down when it was queued) is queued again by the evaluation task.
    "ALERT_REDISPATCH_AFTER": 600,
    # Link to the admin put in notifications, e.g. "https://ops.example.com" (None: no link).
    "ALERT_SITE_URL": None,
    # Admin -----------------------------------------------------------------------------------------------
    # Filtered changelist counts stop at this many rows ("more than N"), so a page never counts millions;
    # unfiltered counts of big tables come from the PostgreSQL planner's estimate instead.
    "ADMIN_COUNT_CAP": 10_000,
    # Most rows one CSV export of a changelist writes (the export streams; larger sets need narrower filters).
    "ADMIN_EXPORT_MAX_ROWS": 100_000,
    # API -------------------------------------------------------------------------------------------------
    # Authentication for the monitoring and batches APIs (independent of the host's REST_FRAMEWORK).
    "API_AUTHENTICATION_CLASSES": (
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ),
    # Scoped throttle rates (DRF syntax); a view names its scope with ``throttle_scope``.
    "API_THROTTLE_RATES": {"monitoring": "600/min", "monitoring-actions": "60/min", "batches": "600/min",
                           "monitoring-live": "60/min", "monitoring-scrape": "120/min"},
}


@cache
def get_config() -> dict[str, Any]:
    """Return the effective MONITORING settings: the defaults overlaid with the host's dict."""
    user = getattr(settings, "MONITORING", {}) or {}
    return {**DEFAULTS, **{k: v for k, v in user.items() if k in DEFAULTS}}


def get(key: str) -> Any:
    """Return one MONITORING setting."""
    return get_config()[key]


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    if setting == "MONITORING":
        get_config.cache_clear()
        from . import masking

        masking.get_masking_hook.cache_clear()
