"""System checks for the MONITORING settings dict (ids ``monitoring.E00x``, each with a hint)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import Error, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS

_POSITIVE_NUMBERS = ("BUFFER_SIZE", "FLUSH_INTERVAL", "MAX_BUFFERED_EVENTS", "MAX_ARGUMENTS_BYTES",
                     "MAX_RESULT_CHARS", "MAX_TRACEBACK_CHARS", "STUCK_AFTER", "LOST_AFTER",
                     "BULK_SYNC_LIMIT", "BULK_MAX_ITEMS", "BULK_BATCH_SIZE", "BULK_PREVIEW_TTL", "IDEMPOTENCY_TTL",
                     "DOUBLE_SUBMIT_WINDOW", "CLEAR_BATCH_SIZE", "CONTROL_TIMEOUT",
                     "ROLLUP_RETENTION_DAYS", "ROLLUP_SETTLE_SECONDS", "PROCESSING_RATE_WINDOW",
                     "SUCCESS_RATE_SAMPLE", "METRICS_WINDOW", "DEPTH_CACHE_SECONDS", "WORKER_INSPECT_TIMEOUT",
                     "WORKER_CACHE_SECONDS", "TIMELINE_MAX_BARS", "LIVE_INTERVAL", "LIVE_MAX_STREAMS",
                     "LIVE_MAX_SECONDS", "PROMETHEUS_MAX_TASK_NAMES", "ALERT_DELIVERY_ATTEMPTS",
                     "ALERT_DELIVERY_BACKOFF", "ALERT_DELIVERY_TIMEOUT", "ALERT_REDISPATCH_AFTER",
                     "ADMIN_COUNT_CAP",
                     "ADMIN_EXPORT_MAX_ROWS")


def check_setting_keys(user: dict[str, Any], defaults: dict[str, Any], name: str, app: str) -> list[Error]:
    """Report unknown keys of an app settings dict (shared by monitoring and batches)."""
    if not isinstance(user, dict):
        return [Error(f"{name} must be a dict, not {type(user).__name__}.",
                      hint=f"Set {name} = {{}} or a dict of the keys documented in {app}/conf.py.",
                      id=f"{app}.E001")]
    return [
        Error(f"Unknown key {key!r} in settings.{name}.",
              hint=f"Valid keys: {', '.join(sorted(defaults))}. Defaults are documented in {app}/conf.py.",
              id=f"{app}.E001")
        for key in sorted(set(user) - set(defaults))
    ]


@register()
def check_monitoring_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    user = getattr(settings, "MONITORING", {})
    errors = check_setting_keys(user, DEFAULTS, "MONITORING", "monitoring")
    if errors:
        return errors
    config = {**DEFAULTS, **user}
    for key in _POSITIVE_NUMBERS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(Error(
                f"settings.MONITORING[{key!r}] must be a positive number, got {value!r}.",
                hint=f"For example MONITORING = {{{key!r}: {DEFAULTS[key]!r}}}.",
                id="monitoring.E002"))
    if not isinstance(config["RETENTION_DAYS"], int) or config["RETENTION_DAYS"] < 0:
        errors.append(Error(
            f"settings.MONITORING['RETENTION_DAYS'] must be a whole number of days >= 0, "
            f"got {config['RETENTION_DAYS']!r}.",
            hint="Use 0 to keep every record, or for example 30.", id="monitoring.E002"))
    for key in ("IGNORE_TASKS", "SENSITIVE_KEYS", "KNOWN_QUEUES"):
        if isinstance(config[key], str) or not all(isinstance(v, str) for v in config[key]):
            errors.append(Error(f"settings.MONITORING[{key!r}] must be a list of strings.",
                                hint=f"For example {key!r}: {list(DEFAULTS[key])[:2]!r}.", id="monitoring.E002"))
    hook = config["MASKING_HOOK"]
    try:
        func: Callable[..., Any] = import_string(hook)
        if not callable(func):
            raise TypeError(f"{hook} is not callable")
    except (ImportError, TypeError) as exc:
        errors.append(Error(f"settings.MONITORING['MASKING_HOOK'] = {hook!r} cannot be used: {exc}.",
                            hint="Give the dotted path of a callable(value, *, task_name, field), for example "
                                 "'monitoring.masking.mask_sensitive'.", id="monitoring.E003"))
    if config["DATABASE_ALIAS"] not in settings.DATABASES:
        errors.append(Error(f"settings.MONITORING['DATABASE_ALIAS'] = {config['DATABASE_ALIAS']!r} is not "
                            f"in settings.DATABASES.",
                            hint=f"Use one of: {', '.join(settings.DATABASES)}.", id="monitoring.E004"))
    return errors
