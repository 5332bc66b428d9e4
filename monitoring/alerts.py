"""Alerts: rule validation, evaluation through the metrics services, operator actions and notifiers.

``evaluate()`` (the ``evaluate_alerts`` periodic task, every minute) measures every enabled rule through
``monitoring.registry`` (job metrics read the rollups and the active-job index, so the cost does not
grow with the table), opens one alert per rule and scope when the condition holds (a partial unique
constraint keeps it at one), and resolves it when the condition clears. Acknowledged alerts stay open
until then. Notifications are rows in ``AlertDelivery`` handed to a Celery task after the transaction
commits, so a slow or dead endpoint never holds up evaluation; the task retries with exponential
backoff and records every error on the delivery.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import get_connection, send_mail
from django.core.validators import URLValidator, validate_email
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, IntegerField, Value, When
from django.utils import timezone

from . import conf, metrics, registry, rollups, workers
from .audit import Actor, record_action
from .brokers import queue_depths
from .control import InvalidState, NotFound
from .models import (
    OPEN_ALERT_STATES,
    Alert,
    AlertDelivery,
    AlertRule,
    AlertSeverity,
    AlertState,
    DeliveryStatus,
)
from .registry import ABOVE, AT_LEAST, AT_MOST, BELOW, Check, Context, Metric, Observation, Scope, ScopeKind

logger = logging.getLogger("monitoring.alerts")

CHANNEL_TYPES = ("email", "webhook")
WEBHOOK_FORMATS = ("json", "slack")
MIN_WINDOW = 60
MAX_WINDOW = 30 * 86_400
SEVERITY_RANK = {AlertSeverity.CRITICAL: 0, AlertSeverity.HIGH: 1, AlertSeverity.MEDIUM: 2, AlertSeverity.LOW: 3}
COMPARISON_WORDS = {ABOVE: "above", BELOW: "below", AT_LEAST: "at least", AT_MOST: "at most"}
RULE_FIELDS = ("name", "metric", "scope", "scope_value", "threshold", "window", "min_samples", "severity", "channels",
               "cooldown", "notify_resolved", "enabled")
MAX_MIN_SAMPLES = 1_000_000


# --- built-in metrics ------------------------------------------------------------------------------------

def _job_figures(check: Check) -> rollups.Figures:
    """Finished jobs of the scope in the window, summed from the rollups (shared by rules with one window)."""
    data = check.context.get(("rollups", check.since, check.now), lambda: rollups.aggregate(check.since, check.now))
    total = rollups.Figures()
    for (_, task_name, queue), figures in data.items():
        if (check.scope.kind == "queue" and queue != check.scope.value) or (
                check.scope.kind == "task_name" and task_name != check.scope.value):
            continue
        total.add(figures)
    return total


def _figures_details(figures: rollups.Figures) -> dict[str, Any]:
    return {"succeeded": figures.succeeded, "failed": figures.failures, "revoked": figures.revoked,
            "total": figures.total}


def _error_rate(check: Check) -> Observation:
    figures = _job_figures(check)
    decided = figures.succeeded + figures.failures
    value = round(100.0 * figures.failures / decided, 2) if decided else None
    return Observation(value, details=_figures_details(figures), samples=decided)


def _success_rate(check: Check) -> Observation:
    figures = _job_figures(check)
    # The same denominator as the rate: succeeded + failed (revoked jobs are neither).
    return Observation(figures.success_rate, details=_figures_details(figures),
                       samples=figures.succeeded + figures.failures)


def _average_time(check: Check) -> Observation:
    figures = _job_figures(check)
    value = figures.average_runtime
    return Observation(round(value, 3) if value is not None else None,
                       details={"jobs_timed": figures.runtime_count}, samples=figures.runtime_count)


def _p95_time(check: Check) -> Observation:
    figures = _job_figures(check)
    value = figures.percentile(0.95)
    return Observation(round(value, 3) if value is not None else None,
                       details={"jobs_timed": figures.runtime_count}, samples=figures.runtime_count)


def _throughput(check: Check) -> Observation:
    figures = _job_figures(check)
    hours = check.window.total_seconds() / 3600
    return Observation(round(figures.total / hours, 3), details={"finished": figures.total})


def _queue_depth(check: Check) -> Observation:
    if check.scope.kind == "queue":
        names = [check.scope.value]
    else:
        names = check.context.get("queue-names", lambda: sorted(metrics.queue_sources()))
    report = queue_depths(names)
    if not report.available:
        return Observation(None, known=False, details={"error": report.error})
    return Observation(float(sum(report.depths.values())), details={"depths": report.depths})


def _stuck_jobs(check: Check) -> Observation:
    stuck = metrics.stuck_jobs(check.threshold, now=check.now)
    if check.scope.kind == "queue":
        stuck = stuck.filter(queue=check.scope.value)
    elif check.scope.kind == "task_name":
        stuck = stuck.filter(task_name=check.scope.value)
    longest = list(stuck[:5])
    if not longest:
        return Observation(0.0, details={"stuck": 0})
    described = [metrics.describe_stuck(job, now=check.now) for job in longest]
    return Observation(described[0]["stuck_seconds"], details={
        "stuck": stuck.count(),
        "longest": [{key: job[key] for key in ("task_id", "task_name", "queue", "worker", "stuck_seconds")}
                    for job in described]})


def _workers_online(check: Check) -> Observation:
    # Asked afresh once per evaluation: a cached report could hide a worker that died a minute ago.
    report = check.context.get("workers", lambda: workers.workers(refresh=True))
    if not report.available:
        return Observation(None, known=False, details={"error": report.error})
    online = report.consumers(check.scope.value) if check.scope.kind == "queue" else report.online
    return Observation(float(len(online)), details={"workers": online})


JOB_SCOPES = ("all", "queue", "task_name")


def register_builtin() -> None:
    """Register monitoring's own scopes and job metrics (called from ``MonitoringConfig.ready``)."""
    registry.register_scope(ScopeKind("all", "All jobs"))
    registry.register_scope(ScopeKind("queue", "A queue"))
    registry.register_scope(ScopeKind("task_name", "A task name"))
    for metric in (
        Metric("error_rate", "Error rate", ABOVE, "%", JOB_SCOPES, _error_rate, max_threshold=100, sampled=True),
        Metric("p95_processing_time", "95th percentile processing time", ABOVE, "s", JOB_SCOPES, _p95_time,
               sampled=True),
        Metric("avg_processing_time", "Average processing time", ABOVE, "s", JOB_SCOPES, _average_time,
               sampled=True),
        Metric("throughput", "Throughput (jobs per hour)", BELOW, "/h", JOB_SCOPES, _throughput),
        Metric("queue_depth", "Queue depth", ABOVE, " messages", ("all", "queue"), _queue_depth,
               uses_window=False),
        # The threshold is the seconds a job must have been active; the value is the longest one's.
        Metric("stuck_jobs", "Longest stuck job", ABOVE, "s", JOB_SCOPES, _stuck_jobs, uses_window=False),
        Metric("success_rate", "Success rate", BELOW, "%", JOB_SCOPES, _success_rate, max_threshold=100,
               sampled=True),
        Metric("no_workers_online", "Workers online", AT_MOST, " workers", ("all", "queue"), _workers_online,
               uses_window=False),
    ):
        registry.register_metric(metric)


# --- rule validation -------------------------------------------------------------------------------------

def _allowed(values: Any) -> str:
    return ", ".join(values)


def channel_errors(channels: Any) -> list[str]:
    """Problems with a rule's notification channels (empty when they are fine)."""
    if not isinstance(channels, list):
        return ['Must be a list, e.g. [{"type": "email", "to": ["ops@example.com"]}].']
    if "\\u0000" in json.dumps(channels, default=str):
        # PostgreSQL cannot store NUL in text or jsonb.
        return ["Must not contain NUL characters."]
    errors: list[str] = []
    for index, channel in enumerate(channels):
        where = f"channels[{index}]"
        if not isinstance(channel, dict):
            errors.append(f"{where}: must be an object with a type.")
            continue
        kind = channel.get("type")
        if kind not in CHANNEL_TYPES:
            errors.append(f'{where}.type: "{kind}" is not a valid channel type. Allowed values: '
                          f"{_allowed(CHANNEL_TYPES)}.")
            continue
        allowed_keys = {"type", "to"} if kind == "email" else {"type", "url", "format"}
        extra = sorted(set(channel) - allowed_keys)
        if extra:
            errors.append(f"{where}: unknown key {extra[0]!r}; a {kind} channel takes "
                          f"{_allowed(sorted(allowed_keys))}.")
        if kind == "email":
            to = channel.get("to")
            if not isinstance(to, list) or not to or not all(isinstance(a, str) for a in to):
                errors.append(f"{where}.to: must be a non-empty list of email addresses.")
                continue
            for address in to:
                try:
                    validate_email(address)
                except ValidationError:
                    errors.append(f"{where}.to: {address!r} is not a valid email address.")
        else:
            url = channel.get("url")
            try:
                URLValidator(schemes=["http", "https"])(url if isinstance(url, str) else "")
            except ValidationError:
                errors.append(f"{where}.url: must be an http(s) URL, e.g. https://hooks.example.com/alerts.")
            if channel.get("format", "json") not in WEBHOOK_FORMATS:
                errors.append(f'{where}.format: "{channel.get("format")}" is not a valid format. Allowed values: '
                              f"{_allowed(WEBHOOK_FORMATS)}.")
    return errors


def rule_errors(data: dict[str, Any]) -> dict[str, list[str]]:
    """Check a rule's metric, scope, threshold, window and channels against the registry; field -> errors."""
    errors: dict[str, list[str]] = {}
    known = registry.metrics()
    metric = known.get(data.get("metric") or "")
    if "metric" in data and metric is None:
        errors["metric"] = [f'"{data["metric"]}" is not a valid metric. Allowed values: {_allowed(known)}.']
    scopes = registry.scope_kinds()
    scope = data.get("scope", "all")
    if scope not in scopes:
        errors["scope"] = [f'"{scope}" is not a valid scope. Allowed values: {_allowed(scopes)}.']
    elif metric is not None and scope not in metric.scopes:
        errors["scope"] = [f'"{scope}" does not apply to {metric.name}. Allowed values: {_allowed(metric.scopes)}.']
    else:
        value = data.get("scope_value") or ""
        if scope == "all" and value:
            errors["scope_value"] = ['Must be empty when scope is "all".']
        elif scope != "all" and not value:
            errors["scope_value"] = [f"Required when scope is {scope!r}: the {scopes[scope].label.lower()}."]
        elif scope != "all" and scopes[scope].validate is not None:
            problem = scopes[scope].validate(value)
            if problem:
                errors["scope_value"] = [problem]
    threshold = data.get("threshold")
    if "threshold" in data:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            errors["threshold"] = ["Must be a number."]
        elif threshold < 0:
            errors["threshold"] = ["Must be 0 or more."]
        elif metric is not None and metric.max_threshold is not None and threshold > metric.max_threshold:
            errors["threshold"] = [f"Must be at most {metric.max_threshold:g} for {metric.name} "
                                   f"({metric.unit.strip()})."]
    window = data.get("window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or not MIN_WINDOW <= window <= MAX_WINDOW):
        errors["window"] = [f"Must be a whole number of seconds from {MIN_WINDOW} to {MAX_WINDOW} (30 days)."]
    min_samples = data.get("min_samples")
    if min_samples is not None:
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or not 0 <= min_samples <= MAX_MIN_SAMPLES:
            errors["min_samples"] = [f"Must be a whole number from 0 to {MAX_MIN_SAMPLES:,}."]
        elif min_samples and metric is not None and not metric.sampled:
            sampled = [name for name, m in known.items() if m.sampled]
            errors["min_samples"] = [f"Only rates and averages count samples; {metric.name} does not. Set 0, or use "
                                     f"one of: {_allowed(sampled)}."]
    if "channels" in data:
        problems = channel_errors(data["channels"])
        if problems:
            errors["channels"] = problems
    return errors


class RuleInvalid(Exception):
    """A rule that does not validate; ``errors`` maps each field to its problems."""

    status = 400

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def _rule_snapshot(rule: AlertRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in RULE_FIELDS}


@transaction.atomic
def create_rule(actor: Actor, data: dict[str, Any]) -> AlertRule:
    """Create a rule (validated against the registry) and audit it."""
    values = {name: data[name] for name in RULE_FIELDS if name in data}
    errors = rule_errors(values)
    if errors:
        raise RuleInvalid(errors)
    rule = AlertRule.objects.create(**values)
    record_action(actor, "alert_rule.create", targets=[rule.pk], parameters=_rule_snapshot(rule))
    return rule


@transaction.atomic
def update_rule(actor: Actor, rule: AlertRule, data: dict[str, Any]) -> AlertRule:
    """Change a rule; its open alert is resolved at the next evaluation if the change clears it."""
    changes = {name: data[name] for name in RULE_FIELDS if name in data}
    errors = rule_errors({**_rule_snapshot(rule), **changes})
    if errors:
        raise RuleInvalid(errors)
    for name, value in changes.items():
        setattr(rule, name, value)
    rule.save()
    record_action(actor, "alert_rule.update", targets=[rule.pk], parameters=changes)
    return rule


@transaction.atomic
def delete_rule(actor: Actor, rule: AlertRule, now: datetime | None = None) -> None:
    """Delete a rule: its open alerts are resolved first, its alert history stays."""
    now = now or timezone.now()
    rule.alerts.filter(state__in=OPEN_ALERT_STATES).update(
        state=AlertState.RESOLVED, resolved_at=now, resolved_by=actor.user, resolved_by_name=actor.name[:150],
        resolve_comment="The rule was deleted.")
    record_action(actor, "alert_rule.delete", targets=[rule.pk], parameters=_rule_snapshot(rule))
    rule.delete()


# --- evaluation ------------------------------------------------------------------------------------------

@dataclass
class EvaluationReport:
    """What one evaluation run did."""

    evaluated: int = 0
    fired: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"evaluated": self.evaluated, "fired": self.fired, "resolved": self.resolved,
                "unknown": self.unknown, "errors": self.errors}


def _format(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:g}{unit}"


def describe(rule: AlertRule, metric: Metric, value: float | None) -> str:
    """One line saying what breached, e.g. "Error rate 25% above 10% for queue emails (last 3600 s)"."""
    scope = Scope(rule.scope, rule.scope_value)
    window = f" (last {rule.window} s)" if metric.uses_window else ""
    return (f"{metric.label} {_format(value, metric.unit)} {COMPARISON_WORDS[metric.comparison]} "
            f"{_format(rule.threshold, metric.unit)} for {scope}{window}")


def evaluate(now: datetime | None = None) -> EvaluationReport:
    """Evaluate every enabled rule once: open, update or resolve its alert, and queue notifications."""
    now = now or timezone.now()
    context = Context()
    report = EvaluationReport()
    rules = list(AlertRule.objects.filter(enabled=True).order_by("id"))
    _close_orphans(rules, now)
    for rule in rules:
        metric = registry.get_metric(rule.metric)
        if metric is None:
            # E.g. a batch metric while the batches app is not installed: leave the rule alone.
            report.errors[rule.pk] = f"unknown metric {rule.metric!r}"
            continue
        scope = Scope(rule.scope, rule.scope_value)
        try:
            observation = metric.measure(Check(scope, timedelta(seconds=rule.window), rule.threshold, now, context))
        except Exception as exc:  # one broken metric must not stop the other rules
            logger.exception("Alert rule %s (%s) could not be measured.", rule.pk, rule.metric)
            report.errors[rule.pk] = f"{type(exc).__name__}: {exc}"
            continue
        report.evaluated += 1
        if not observation.known:
            report.unknown.append(rule.pk)
            continue
        breached = observation.value is not None and metric.breached(observation.value, rule.threshold)
        if breached and observation.samples is not None and observation.samples < rule.min_samples:
            # Too few jobs in the window for the rate to mean anything: the condition is not established.
            breached = False
            observation.details = {**observation.details, "samples": observation.samples,
                                   "min_samples": rule.min_samples, "too_few_samples": True}
        alert = _apply(rule, metric, scope, observation, breached, now)
        if alert is not None:
            (report.fired if breached else report.resolved).append(alert.pk)
    _redispatch_stale(now)
    return report


def _close_orphans(rules: list[AlertRule], now: datetime) -> None:
    """Resolve open alerts whose rule was disabled or deleted, or whose scope changed since they fired."""
    current = {rule.pk: Scope(rule.scope, rule.scope_value).key for rule in rules}
    orphans = [alert.pk for alert in Alert.objects.filter(state__in=OPEN_ALERT_STATES)
               .only("id", "rule_id", "scope_key") if current.get(alert.rule_id) != alert.scope_key]
    if orphans:
        Alert.objects.filter(pk__in=orphans).update(
            state=AlertState.RESOLVED, resolved_at=now, last_evaluated_at=now,
            resolve_comment="The rule was disabled, deleted or its scope changed.")


def _apply(rule: AlertRule, metric: Metric, scope: Scope, observation: Observation, breached: bool,
           now: datetime) -> Alert | None:
    """Move the rule's alert for this scope: open it, refresh it, or resolve it. Returns a changed alert."""
    with transaction.atomic():
        alert = (Alert.objects.select_for_update()
                 .filter(rule=rule, scope_key=scope.key, state__in=OPEN_ALERT_STATES).first())
        if alert is not None:
            alert.last_value, alert.last_evaluated_at = observation.value, now
            if breached:
                alert.details = observation.details
                alert.save(update_fields=["last_value", "last_evaluated_at", "details"])
                return None
            alert.state, alert.resolved_at = AlertState.RESOLVED, now
            alert.save(update_fields=["last_value", "last_evaluated_at", "state", "resolved_at"])
            if rule.notify_resolved and alert.notified_at is not None:
                _queue_deliveries(alert, rule, AlertState.RESOLVED, now)
            return alert
        if not breached:
            return None
        alert = Alert(rule=rule, rule_name=rule.name, metric=rule.metric, scope_key=scope.key,
                      severity=rule.severity, threshold=rule.threshold, value=observation.value,
                      last_value=observation.value, message=f"{rule.name}: {describe(rule, metric, observation.value)}",
                      details=observation.details, fired_at=now, last_evaluated_at=now)
        try:
            with transaction.atomic():
                alert.save()
        except IntegrityError:
            # Another evaluation opened it between our read and our write: theirs stands.
            return None
        if not _in_cooldown(rule, scope, alert, now) and rule.channels:
            alert.notified_at = now
            alert.save(update_fields=["notified_at"])
            _queue_deliveries(alert, rule, AlertState.FIRING, now)
        return alert


def _in_cooldown(rule: AlertRule, scope: Scope, alert: Alert, now: datetime) -> bool:
    """Whether the previous alert of this rule and scope ended (or was announced) within the cooldown."""
    previous = (Alert.objects.filter(rule=rule, scope_key=scope.key).exclude(pk=alert.pk)
                .order_by("-fired_at", "-id").values("notified_at", "resolved_at").first())
    if previous is None or not rule.cooldown:
        return False
    # Every earlier alert is resolved by now (one open per rule and scope), and resolution comes last.
    last = previous["resolved_at"] or previous["notified_at"]
    return last is not None and now - last < timedelta(seconds=rule.cooldown)


# --- notifications ---------------------------------------------------------------------------------------

def _queue_deliveries(alert: Alert, rule: AlertRule, event: str, now: datetime) -> list[AlertDelivery]:
    deliveries = AlertDelivery.objects.bulk_create([
        AlertDelivery(alert=alert, event=event, channel=channel, channel_type=channel.get("type", ""),
                      created_at=now)
        for channel in rule.channels
    ])
    ids = [delivery.pk for delivery in deliveries]
    # After commit: the task must find the rows, and a rolled-back evaluation must notify nobody.
    transaction.on_commit(lambda: dispatch(ids))
    return deliveries


def dispatch(delivery_ids: list[int]) -> None:
    """Hand deliveries to the Celery task; a broker that cannot be reached is recorded, not raised."""
    from .tasks import deliver_alert

    for delivery_id in delivery_ids:
        try:
            deliver_alert.apply_async((delivery_id,), queue=conf.get("ALERT_QUEUE"), retry=False)
        except Exception as exc:
            logger.warning("Could not queue alert delivery %s: %s", delivery_id, exc)
            AlertDelivery.objects.filter(pk=delivery_id).update(
                last_error=f"Could not be queued ({type(exc).__name__}: {exc}); the evaluation task queues it "
                           f"again later.")


def _redispatch_stale(now: datetime) -> None:
    """Queue again deliveries pending for longer than ``ALERT_REDISPATCH_AFTER`` (lost or never queued)."""
    cutoff = now - timedelta(seconds=conf.get("ALERT_REDISPATCH_AFTER"))
    stale = list(AlertDelivery.objects.filter(status=DeliveryStatus.PENDING, created_at__lt=cutoff)
                 .exclude(last_attempt_at__gte=cutoff).values_list("id", flat=True)[:500])
    if stale:
        AlertDelivery.objects.filter(pk__in=stale).update(last_attempt_at=now)
        transaction.on_commit(lambda: dispatch(stale))


def backoff(attempts: int) -> float:
    """Seconds to wait before the next attempt after ``attempts`` failed ones."""
    return float(conf.get("ALERT_DELIVERY_BACKOFF")) * 2 ** max(attempts - 1, 0)


def _site_link(alert: Alert) -> str | None:
    base = conf.get("ALERT_SITE_URL")
    return f"{base.rstrip('/')}/admin/monitoring/alert/{alert.pk}/change/" if base else None


def payload(alert: Alert, event: str) -> dict[str, Any]:
    """The JSON body of a webhook notification."""
    return {
        "event": event,
        "alert": {
            "id": alert.pk, "rule_id": alert.rule_id, "rule": alert.rule_name, "metric": alert.metric,
            "scope": alert.scope_key, "severity": alert.severity, "state": alert.state, "value": alert.value,
            "last_value": alert.last_value, "threshold": alert.threshold, "message": alert.message,
            "details": alert.details, "fired_at": alert.fired_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "url": _site_link(alert),
        },
    }


def slack_payload(alert: Alert, event: str) -> dict[str, Any]:
    """A Slack incoming-webhook body (``text`` plus one block), also understood by Mattermost and others."""
    prefix = "RESOLVED" if event == AlertState.RESOLVED else alert.severity.upper()
    text = f"[{prefix}] {alert.message}"
    link = _site_link(alert)
    if link:
        text += f" <{link}|open>"
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def subject(alert: Alert, event: str) -> str:
    prefix = "Resolved" if event == AlertState.RESOLVED else alert.severity.capitalize()
    return f"[jobmonitor] {prefix}: {alert.rule_name} ({alert.scope_key})"


def send_email(alert: Alert, event: str, channel: dict[str, Any]) -> None:
    """Send through Django's mail framework (any EMAIL_BACKEND); raises on failure."""
    body = json.dumps(payload(alert, event)["alert"], indent=2, default=str)
    connection = get_connection(timeout=conf.get("ALERT_DELIVERY_TIMEOUT"))
    send_mail(subject(alert, event), f"{alert.message}\n\n{body}\n",
              conf.get("ALERT_EMAIL_FROM") or settings.DEFAULT_FROM_EMAIL, channel["to"], connection=connection)


def post_webhook(alert: Alert, event: str, channel: dict[str, Any]) -> None:
    """POST the alert as JSON (or a Slack body) with a timeout; raises on a non-2xx answer or no answer."""
    body = slack_payload(alert, event) if channel.get("format") == "slack" else payload(alert, event)
    request = urllib.request.Request(
        channel["url"], data=json.dumps(body, default=str).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "jobmonitor-alerts/1"})
    with urllib.request.urlopen(request, timeout=conf.get("ALERT_DELIVERY_TIMEOUT")) as response:
        response.read(1024)


SENDERS = {"email": send_email, "webhook": post_webhook}


def _error_text(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        detail = exc.read(300).decode("utf-8", "replace") if exc.fp else ""
        return f"HTTP {exc.code} {exc.reason}: {detail}".strip()
    if isinstance(exc, urllib.error.URLError):
        return f"Unreachable: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def attempt_delivery(delivery_id: int, now: datetime | None = None) -> AlertDelivery | None:
    """Make one attempt at a pending delivery and record the outcome; never raises for a failed send.

    After ``ALERT_DELIVERY_ATTEMPTS`` failed attempts the delivery is marked failed. Returns the delivery
    (None when it no longer exists or is not pending).
    """
    delivery = (AlertDelivery.objects.select_related("alert").filter(pk=delivery_id, status=DeliveryStatus.PENDING)
                .first())
    if delivery is None:
        return None
    sender = SENDERS.get(delivery.channel_type)
    error = ""
    try:
        if sender is None:
            raise ValueError(f"unknown channel type {delivery.channel_type!r}")
        sender(delivery.alert, delivery.event, delivery.channel)
    except Exception as exc:  # every failure becomes a recorded error, never an exception in evaluation
        error = _error_text(exc)
        logger.warning("Alert delivery %s (%s) failed: %s", delivery.pk, delivery.channel_type, error)
    now = now or timezone.now()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    if error:
        delivery.last_error = error[:2_000]
        if delivery.attempts >= conf.get("ALERT_DELIVERY_ATTEMPTS") or sender is None:
            delivery.status = DeliveryStatus.FAILED
    else:
        delivery.status, delivery.sent_at = DeliveryStatus.SENT, now
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        attempts=F("attempts") + 1, last_attempt_at=now, last_error=delivery.last_error, status=delivery.status,
        sent_at=delivery.sent_at)
    return delivery


# --- operator actions ------------------------------------------------------------------------------------

def _locked_alert(alert_id: Any) -> Alert:
    try:
        return Alert.objects.select_for_update().get(pk=int(alert_id))
    except (Alert.DoesNotExist, TypeError, ValueError):
        raise NotFound(f"No alert with id {alert_id!r}.") from None


@transaction.atomic
def acknowledge(actor: Actor, alert_id: Any, comment: str = "", now: datetime | None = None) -> Alert:
    """Acknowledge a firing alert: someone is on it. It stays open until its condition clears."""
    alert = _locked_alert(alert_id)
    if alert.state != AlertState.FIRING:
        by = f" by {alert.acknowledged_by_name}" if alert.state == AlertState.ACKNOWLEDGED else ""
        raise InvalidState(f"Alert {alert.pk} is {alert.state}{by}; only a firing alert can be acknowledged.")
    alert.state, alert.acknowledged_at = AlertState.ACKNOWLEDGED, now or timezone.now()
    alert.acknowledged_by, alert.acknowledged_by_name = actor.user, actor.name[:150]
    alert.acknowledge_comment = comment
    alert.save(update_fields=["state", "acknowledged_at", "acknowledged_by", "acknowledged_by_name",
                              "acknowledge_comment"])
    record_action(actor, "alert.acknowledge", targets=[alert.pk], parameters={"comment": comment})
    return alert


@transaction.atomic
def resolve(actor: Actor, alert_id: Any, comment: str = "", now: datetime | None = None) -> Alert:
    """Resolve an open alert by hand; if its condition still holds, the next evaluation opens a new one."""
    alert = _locked_alert(alert_id)
    if alert.state == AlertState.RESOLVED:
        raise InvalidState(f"Alert {alert.pk} is already resolved.")
    alert.state, alert.resolved_at = AlertState.RESOLVED, now or timezone.now()
    alert.resolved_by, alert.resolved_by_name, alert.resolve_comment = actor.user, actor.name[:150], comment
    alert.save(update_fields=["state", "resolved_at", "resolved_by", "resolved_by_name", "resolve_comment"])
    record_action(actor, "alert.resolve", targets=[alert.pk], parameters={"comment": comment})
    return alert


# --- reading ---------------------------------------------------------------------------------------------

def _severity_order() -> Case:
    return Case(*(When(severity=name, then=Value(rank)) for name, rank in SEVERITY_RANK.items()),
                default=Value(len(SEVERITY_RANK)), output_field=IntegerField())


def open_alerts(limit: int = 20) -> dict[str, Any]:
    """Open alerts for dashboards and the live stream: counts by severity and the most severe first."""
    opened = Alert.objects.filter(state__in=OPEN_ALERT_STATES)
    counts = dict(opened.order_by().values_list("severity").annotate(n=Count("id")))
    rows = (opened.annotate(rank=_severity_order()).order_by("rank", "-fired_at", "-id")
            .values("id", "rule_id", "rule_name", "metric", "scope_key", "severity", "state", "value", "last_value",
                    "threshold", "message", "fired_at", "acknowledged_at", "acknowledged_by_name")[:limit])
    return {
        "count": sum(counts.values()),
        "by_severity": {name: counts.get(name, 0) for name in SEVERITY_RANK},
        "alerts": [{**row, "scope": row.pop("scope_key"),
                    "fired_at": row["fired_at"].isoformat(),
                    "acknowledged_at": row["acknowledged_at"].isoformat() if row["acknowledged_at"] else None}
                   for row in rows],
    }

