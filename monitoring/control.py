"""Write-side services: retry, cancel, pause/resume, purge, clear and bulk actions, each audited.

The API, the admin and the management commands are thin faces over these functions. Each service takes
an :class:`~monitoring.audit.Actor`, validates everything before it touches Celery, the broker or the
database (so a rejected request changes nothing), returns a plain result object and raises a typed
:class:`ControlError` the faces map to HTTP codes or command errors. Every call, accepted or rejected,
writes one :class:`~monitoring.models.AuditEvent`.

Retry overrides that Celery itself has no per-message option for (``max_retries`` and ``backoff``)
travel as message headers (``jobmonitor_max_retries``, ``jobmonitor_backoff``); a task honours them when
it uses :class:`OperatorRetryPolicy` as its base class (see its docstring). A stock task ignores them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal as signal_module
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import Task, shared_task
from django.db import IntegrityError, connections, models, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import brokers, capture, conf, metrics
from .audit import Actor, record_action, storable_json
from .masking import MASK
from .models import (
    FINISHED_STATES,
    BulkOperation,
    BulkStatus,
    IdempotencyRecord,
    JobRun,
    JobState,
    QueueState,
    storable,
)

logger = logging.getLogger("monitoring.control")

RETRY_OF_HEADER = "jobmonitor_retry_of"
MAX_RETRIES_HEADER = "jobmonitor_max_retries"
BACKOFF_HEADER = "jobmonitor_backoff"

RETRYABLE_STATES = (JobState.FAILURE, JobState.REVOKED, JobState.LOST)
CANCELLABLE_STATES = (JobState.PENDING, JobState.RECEIVED, JobState.STARTED, JobState.RETRY)
# Pools whose workers can kill the process running a task (revoke(terminate=True)); solo and threads run
# tasks in the worker's own process or thread, which cannot be interrupted from outside.
TERMINATING_POOLS = ("prefork", "eventlet", "gevent", "processes")
CLEAR_TYPES: dict[str, tuple[str, ...]] = {
    "completed": (JobState.SUCCESS,),
    "failed": (JobState.FAILURE, JobState.LOST),
    "all": tuple(FINISHED_STATES),
}
BULK_ACTIONS = ("retry", "cancel")
BULK_FILTERS = ("state", "task_name", "queue", "worker", "exception_type", "since", "until")
MAX_PRIORITY = 9  # Redis and the filesystem transport honour 0-9; RabbitMQ queues declare x-max-priority <= 255
MAX_COUNTDOWN = 30 * 86_400
MAX_MAX_RETRIES = 100
MAX_BACKOFF_DELAY = 86_400
TERMINATE_SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT", "SIGUSR1")
_QUEUE_NAME = re.compile(r"^[\w.:@-]{1,255}$")


# --- errors -------------------------------------------------------------------------------------------

class ControlError(Exception):
    """A request the services refuse; nothing was changed."""

    status = 400
    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.message, "code": self.code}


class NotFound(ControlError):
    status = 404
    code = "not_found"


class InvalidOverride(ControlError):
    """A parameter has a value the service does not accept; names the field and what is allowed."""

    code = "invalid_parameter"

    def __init__(self, field: str, message: str, allowed: Any = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.allowed = field, allowed

    def as_dict(self) -> dict[str, Any]:
        body = {**super().as_dict(), "field": self.field, "errors": {self.field: [self.message]}}
        if self.allowed is not None:
            body["allowed"] = self.allowed
        return body


class InvalidState(ControlError):
    """The action does not fit the current state of the job, queue or operation."""

    status = 409
    code = "invalid_state"


class BrokerUnavailable(ControlError):
    status = 503
    code = "broker_unavailable"


# --- results ------------------------------------------------------------------------------------------

@dataclass
class RetryResult:
    original_task_id: str
    new_task_id: str
    task_name: str
    queue: str
    options: dict[str, Any]
    removed_original: bool = False
    duplicate: bool = False

    @property
    def message(self) -> str:
        if self.duplicate:
            return f"Duplicate retry request: job {self.original_task_id} was already retried as {self.new_task_id}."
        return f"Job retried with ID {self.new_task_id}"


@dataclass
class CancelResult:
    task_id: str
    outcome: str  # "revoked" (had not started) or "terminated" (was running)
    worker: str = ""
    message: str = ""


@dataclass
class QueueResult:
    queue: str
    paused: bool
    workers: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class PurgeResult:
    queue: str
    purged: int
    records_revoked: int
    message: str = ""


@dataclass
class ClearResult:
    queue: str
    type: str
    older_than: datetime | None
    deleted: int
    dry_run: bool = False
    message: str = ""


@dataclass
class RetryOverrides:
    """Validated retry parameters (see :func:`parse_retry_overrides`)."""

    priority: int | None = None
    queue: str | None = None
    countdown: float | None = None
    eta: datetime | None = None
    max_retries: int | None = None
    backoff: dict[str, Any] | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    remove_original: bool = False
    rerun: bool = False


RETRY_FIELDS = tuple(RetryOverrides.__dataclass_fields__)


# --- auditing -----------------------------------------------------------------------------------------

def _audited(actor: Actor, action: str, targets: Iterable[Any], parameters: Mapping[str, Any],
             run: Callable[[], Any], *, new_ids: Callable[[Any], list[str]] = lambda result: []) -> Any:
    """Run ``run()`` and write one AuditEvent with its outcome, whether it succeeded, was refused or failed."""
    targets, params = list(targets), storable_json(dict(parameters))
    try:
        result = run()
    except ControlError as exc:
        record_action(actor, action, targets=targets, parameters=params, outcome="rejected", detail=exc.message)
        raise
    except Exception as exc:
        record_action(actor, action, targets=targets, parameters=params, outcome="failed",
                      detail=f"{type(exc).__name__}: {exc}")
        raise
    duplicate = getattr(result, "duplicate", False)
    record_action(actor, action, targets=targets, parameters=params, outcome="duplicate" if duplicate else "ok",
                  detail=getattr(result, "message", ""), new_task_ids=new_ids(result))
    return result


# --- validation ---------------------------------------------------------------------------------------

def _int(data: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidOverride(key, f"must be a whole number from {low} to {high}.", f"{low}-{high}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidOverride(key, f"must be a whole number from {low} to {high}, not {value!r}.",
                              f"{low}-{high}") from None
    if not low <= number <= high:
        raise InvalidOverride(key, f"must be from {low} to {high}, not {number}.", f"{low}-{high}")
    return number


def _number(data: Mapping[str, Any], key: str, low: float, high: float, *, strict_low: bool = False) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        number = float(value)
        if isinstance(value, bool) or number != number:  # NaN
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidOverride(key, f"must be a number of seconds from {low:g} to {high:g}, not {value!r}.",
                              f"{low:g}-{high:g}") from None
    if number > high or number < low or (strict_low and number == low):
        raise InvalidOverride(key, f"must be {'more than' if strict_low else 'at least'} {low:g} and at most "
                                   f"{high:g} seconds, not {number:g}.", f"{low:g}-{high:g}")
    return number


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise InvalidOverride(key, f"must be true or false, not {value!r}.", [True, False])


def parse_datetime_value(value: Any, key: str) -> datetime | None:
    """Parse an ISO 8601 date or date-time (naive values are in the current time zone)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = parse_datetime(str(value))
            if parsed is None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                parsed = parse_datetime(f"{value}T00:00:00")
        except ValueError:
            parsed = None
        if parsed is None:
            raise InvalidOverride(key, f"must be an ISO 8601 date or date-time such as 2026-11-22T10:00:00Z, "
                                       f"not {value!r}.", "ISO 8601")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def parse_retry_overrides(data: Mapping[str, Any] | None) -> RetryOverrides:
    """Validate retry parameters; raise :class:`InvalidOverride` naming the first bad field."""
    data = dict(data or {})
    unknown = sorted(set(data) - set(RETRY_FIELDS))
    if unknown:
        raise InvalidOverride(unknown[0], f"unknown retry parameter; use one of {', '.join(RETRY_FIELDS)}.",
                              list(RETRY_FIELDS))
    queue = data.get("queue")
    if queue is not None:
        if not isinstance(queue, str) or not _QUEUE_NAME.match(queue):
            raise InvalidOverride("queue", "must be a queue name (letters, digits, . : @ _ -).", known_queue_names())
        if not metrics.queue_exists(queue):
            raise InvalidOverride("queue", f"unknown queue {queue!r}; no worker, route or record uses it.",
                                  known_queue_names())
    countdown = _number(data, "countdown", 0, MAX_COUNTDOWN)
    eta = parse_datetime_value(data.get("eta"), "eta")
    if countdown is not None and eta is not None:
        raise InvalidOverride("eta", "give either countdown or eta, not both.", ["countdown", "eta"])
    if eta is not None and eta < timezone.now() - timedelta(minutes=1):
        raise InvalidOverride("eta", "must not be in the past; leave it out to run the job now.", "a future time")
    backoff = data.get("backoff")
    if backoff is not None:
        if not isinstance(backoff, Mapping):
            raise InvalidOverride("backoff", 'must be an object like {"type": "exponential", "delay": 5}.',
                                  {"type": ["fixed", "exponential"], "delay": f"seconds, 0-{MAX_BACKOFF_DELAY}"})
        extra = sorted(set(backoff) - {"type", "delay", "max_delay"})
        if extra:
            raise InvalidOverride(f"backoff.{extra[0]}", "unknown backoff key.", ["type", "delay", "max_delay"])
        if backoff.get("type", "fixed") not in ("fixed", "exponential"):
            raise InvalidOverride("backoff.type", f"must be fixed or exponential, not {backoff.get('type')!r}.",
                                  ["fixed", "exponential"])
        delay = _number({"backoff.delay": backoff.get("delay")}, "backoff.delay", 0, MAX_BACKOFF_DELAY)
        if delay is None:
            raise InvalidOverride("backoff.delay", "is required (seconds before the first retry).",
                                  f"0-{MAX_BACKOFF_DELAY}")
        max_delay = _number({"backoff.max_delay": backoff.get("max_delay")}, "backoff.max_delay", 0,
                            MAX_BACKOFF_DELAY)
        backoff = {"type": backoff.get("type", "fixed"), "delay": delay,
                   **({"max_delay": max_delay} if max_delay is not None else {})}
    args = data.get("args")
    if args is not None and not isinstance(args, list | tuple):
        raise InvalidOverride("args", "must be a list of positional arguments (it replaces the stored ones).",
                              "a JSON array")
    kwargs = data.get("kwargs")
    if kwargs is not None and not (isinstance(kwargs, Mapping) and all(isinstance(k, str) for k in kwargs)):
        raise InvalidOverride("kwargs", "must be an object of keyword arguments (merged over the stored ones).",
                              "a JSON object")
    return RetryOverrides(
        priority=_int(data, "priority", 0, MAX_PRIORITY), queue=queue, countdown=countdown, eta=eta,
        max_retries=_int(data, "max_retries", 0, MAX_MAX_RETRIES), backoff=backoff,
        args=list(args) if args is not None else None, kwargs=dict(kwargs) if kwargs is not None else None,
        remove_original=_bool(data, "remove_original"), rerun=_bool(data, "rerun"),
    )


def known_queue_names() -> list[str]:
    """Every queue the monitor knows (configured, consumed, in records, paused), for error messages."""
    return sorted(metrics.queue_sources())


def _require_queue(name: str) -> None:
    if not isinstance(name, str) or not _QUEUE_NAME.match(name) or not metrics.queue_exists(name):
        raise NotFound(f"Unknown queue {name!r}. Known queues: {', '.join(known_queue_names()) or 'none'}.")


def _get_job(task_id: str) -> JobRun:
    job = JobRun.objects.filter(task_id=task_id).first() if storable(task_id) else None
    if job is None:
        raise NotFound(f"No job with task id {task_id!r}.")
    return job


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    return (OperationalError, ConnectionError, OSError)


# --- retry --------------------------------------------------------------------------------------------

def retry(actor: Actor, task_id: str, overrides: Mapping[str, Any] | None = None, *,
          idempotency_key: str | None = None) -> RetryResult:
    """Send a job's task again with its stored arguments and the given overrides; return the new task id."""
    parameters = {**(overrides or {}), **({"idempotency_key": idempotency_key} if idempotency_key else {})}

    def run() -> RetryResult:
        options = parse_retry_overrides(overrides)
        job = _get_job(task_id)
        _check_retryable(job, options)
        return _retry_job(actor, job, options, idempotency_key=idempotency_key, fingerprint_data=overrides or {})

    return _audited(actor, "retry", [task_id], parameters, run, new_ids=lambda r: [r.new_task_id])


def _check_retryable(job: JobRun, options: RetryOverrides) -> None:
    if job.state == JobState.SUCCESS and not options.rerun:
        raise InvalidState(f"Job {job.task_id} succeeded; pass rerun=true to run it again.")
    if job.state not in (*RETRYABLE_STATES, JobState.SUCCESS):
        raise InvalidState(f"Job {job.task_id} is {job.state}; only FAILURE, REVOKED and LOST jobs can be retried "
                           "(and SUCCESS with rerun=true). Cancel it first or wait for it to finish.")
    if job.arguments_truncated:
        raise InvalidState(f"Job {job.task_id} has only a truncated preview of its arguments (over "
                           "MONITORING['MAX_ARGUMENTS_BYTES'] or not JSON), so it cannot be sent again as recorded.")


def _masked_paths(value: Any, path: str) -> list[str]:
    if value == MASK:
        return [path]
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _masked_paths(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _masked_paths(v, f"{path}[{i}]")]
    return []


def _retry_arguments(job: JobRun, options: RetryOverrides) -> tuple[list[Any], dict[str, Any]]:
    args = options.args if options.args is not None else list(job.args or [])
    kwargs = {**(job.kwargs or {}), **(options.kwargs or {})}
    masked = _masked_paths(args, "args") + _masked_paths(kwargs, "kwargs")
    if masked:
        raise InvalidState(f"Job {job.task_id} was recorded with masked secrets ({', '.join(masked)}); pass the "
                           "real values in the args/kwargs overrides to retry it.")
    return args, kwargs


def _fingerprint(action: str, target: str, data: Mapping[str, Any]) -> str:
    text = json.dumps({"action": action, "target": target, "data": storable_json(dict(data))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _retry_job(actor: Actor, job: JobRun, options: RetryOverrides, *, idempotency_key: str | None,
               fingerprint_data: Mapping[str, Any]) -> RetryResult:
    """Send one validated retry, at most once per idempotency key (or per double submit window)."""
    args, kwargs = _retry_arguments(job, options)
    queue = options.queue or job.queue or None
    priority = options.priority if options.priority is not None else job.priority
    headers: dict[str, Any] = {RETRY_OF_HEADER: job.task_id}
    if options.max_retries is not None:
        headers[MAX_RETRIES_HEADER] = options.max_retries
    if options.backoff is not None:
        headers[BACKOFF_HEADER] = options.backoff
    send_options: dict[str, Any] = {"queue": queue, "priority": priority, "headers": headers}
    if options.countdown is not None:
        send_options["countdown"] = options.countdown
    if options.eta is not None:
        send_options["eta"] = options.eta
    fingerprint = _fingerprint("retry", job.task_id, fingerprint_data)
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200):
        raise InvalidOverride("idempotency_key", "must be a string of 1 to 200 characters.", "1-200 characters")
    if idempotency_key:
        key, ttl = f"key:{idempotency_key}", conf.get("IDEMPOTENCY_TTL")
    else:
        # Without a key, the same operator sending the same retry twice within a few seconds (a double
        # click, a resubmitted form) is one request.
        key, ttl = f"auto:{actor.name}:{fingerprint}", conf.get("DOUBLE_SUBMIT_WINDOW")
    key, now = key[:255], timezone.now()
    new_task_id = str(uuid.uuid4())
    result = RetryResult(original_task_id=job.task_id, new_task_id=new_task_id, task_name=job.task_name,
                         queue=queue or "",
                         options=storable_json({k: v for k, v in send_options.items() if v is not None}),
                         removed_original=options.remove_original)
    with transaction.atomic():
        IdempotencyRecord.objects.filter(key=key, expires_at__lte=now).delete()
        try:
            # A concurrent request with the same key blocks on this insert until the first one commits,
            # then fails it and replays the first one's new task id.
            with transaction.atomic():
                IdempotencyRecord.objects.create(key=key, fingerprint=fingerprint, action="retry",
                                                 target=job.task_id, new_task_id=new_task_id,
                                                 expires_at=now + timedelta(seconds=ttl))
        except IntegrityError:
            existing = IdempotencyRecord.objects.get(key=key)
            if existing.fingerprint != fingerprint:
                raise InvalidState(f"Idempotency key {idempotency_key!r} was already used for a different request "
                                   f"({existing.action} {existing.target}); use a new key.") from None
            result.new_task_id, result.duplicate, result.removed_original = existing.new_task_id, True, False
            return result
        if options.remove_original:
            job.delete()
        try:
            # Sent last, inside the transaction: if the broker refuses, the idempotency record and the
            # removed original roll back and nothing has changed.
            brokers.celery_app().send_task(job.task_name, args=args, kwargs=kwargs, task_id=new_task_id,
                                    **{k: v for k, v in send_options.items() if v is not None})
        except _broker_errors() as exc:
            raise BrokerUnavailable(f"The broker refused the message: {exc}. Nothing was sent.") from exc
    return result


class OperatorRetryPolicy(Task):
    """Task base class that honours the ``max_retries`` and ``backoff`` an operator set on a retry.

    Celery has no per-message retry limit or backoff, so :func:`retry` sends them as headers; use this as
    the base of a task (``@shared_task(bind=True, base=OperatorRetryPolicy)``) to apply them whenever the
    task calls ``self.retry(...)`` (or is auto-retried) without an explicit ``max_retries``/``countdown``.
    The headers travel with Celery's own retries, so the policy holds for every attempt.
    """

    abstract = True

    def retry(self, args: Any = None, kwargs: Any = None, exc: Any = None, throw: bool = True, eta: Any = None,
              countdown: Any = None, max_retries: Any = None, **options: Any) -> Any:
        limit, delay = operator_retry_policy(self.request)
        if max_retries is None and limit is not None:
            max_retries = limit
        if countdown is None and eta is None and delay is not None:
            countdown = delay
        return super().retry(args=args, kwargs=kwargs, exc=exc, throw=throw, eta=eta, countdown=countdown,
                             max_retries=max_retries, **options)


def operator_retry_policy(request: Any) -> tuple[int | None, float | None]:
    """Return ``(max_retries, countdown for the next retry)`` an operator set on this message, or Nones."""
    headers = getattr(request, "headers", None) or {}
    limit = headers.get(MAX_RETRIES_HEADER)
    backoff = headers.get(BACKOFF_HEADER)
    delay = None
    if isinstance(backoff, Mapping) and backoff.get("delay") is not None:
        delay = float(backoff["delay"])
        if backoff.get("type") == "exponential":
            delay *= 2 ** (getattr(request, "retries", 0) or 0)
        if backoff.get("max_delay") is not None:
            delay = min(delay, float(backoff["max_delay"]))
    return (int(limit) if limit is not None else None), delay


# --- cancel -------------------------------------------------------------------------------------------

@dataclass
class WorkerSnapshot:
    """What the workers said about themselves: running task ids and pool kind, per worker."""

    active: dict[str, set[str]]
    pools: dict[str, str]

    def pool_of(self, worker: str) -> str | None:
        return self.pools.get(worker)


def inspect_workers(destination: Sequence[str] | None = None) -> WorkerSnapshot:
    """Ask workers (all, or the named ones) which tasks they run and which pool they use."""
    app = brokers.celery_app()
    limit = len(destination) if destination else None
    inspect = app.control.inspect(destination=list(destination) if destination else None,
                                  timeout=conf.get("CONTROL_TIMEOUT"), limit=limit)
    try:
        stats = inspect.stats() or {}
        active = inspect.active() or {}
    except _broker_errors() as exc:
        raise BrokerUnavailable(f"Could not reach the workers through the broker: {exc}.") from exc
    pools = {}
    for worker, info in stats.items():
        implementation = str((info.get("pool") or {}).get("implementation", ""))
        # e.g. "celery.concurrency.prefork:TaskPool" -> "prefork"
        pools[worker] = implementation.rsplit(":", 1)[0].rsplit(".", 1)[-1] or "unknown"
    return WorkerSnapshot(active={w: {t.get("id") for t in tasks} for w, tasks in active.items()}, pools=pools)


def cancel(actor: Actor, task_id: str, *, signal: str = "SIGTERM") -> CancelResult:
    """Revoke a job that has not started; terminate it where its worker's pool can, if it is running."""

    def run() -> CancelResult:
        _check_signal(signal)
        job = _get_job(task_id)
        snapshot = inspect_workers([job.worker]) if job.state == JobState.STARTED and job.worker else None
        return _cancel_job(actor, job, signal=signal, snapshot=snapshot)

    return _audited(actor, "cancel", [task_id], {"signal": signal}, run)


def _check_signal(name: str) -> None:
    if name not in TERMINATE_SIGNALS:
        raise InvalidOverride("signal", f"must be one of {', '.join(TERMINATE_SIGNALS)}.", list(TERMINATE_SIGNALS))


def _cancel_job(actor: Actor, job: JobRun, *, signal: str, snapshot: WorkerSnapshot | None) -> CancelResult:
    if job.state not in CANCELLABLE_STATES:
        raise InvalidState(f"Job {job.task_id} already finished ({job.state}); there is nothing to cancel.")
    app = brokers.celery_app()
    if job.state == JobState.STARTED:
        if not job.worker:
            raise InvalidState(f"Job {job.task_id} is STARTED but no worker is recorded for it, so it cannot be "
                               "terminated.")
        pool = snapshot.pool_of(job.worker) if snapshot else None
        if pool is None:
            raise InvalidState(
                f"Worker {job.worker} did not answer within {conf.get('CONTROL_TIMEOUT')}s, so the job cannot be "
                "terminated safely. Either the worker is gone (the job will then be marked LOST), or it runs the "
                "'solo' pool, which neither answers nor can stop a task while it runs one; run workers with "
                "--pool prefork to make running jobs cancellable. Nothing was sent.")
        if pool not in TERMINATING_POOLS:
            raise InvalidState(
                f"Worker {job.worker} runs the '{pool}' pool, which cannot stop a task that is already running "
                "(the task runs inside the worker's own process or thread). The job will finish on its own; run "
                "workers with --pool prefork to make running jobs cancellable.")
        if job.task_id not in snapshot.active.get(job.worker, set()):
            raise InvalidState(f"Job {job.task_id} is no longer running on {job.worker} (it just finished or "
                               "the worker lost it); nothing was terminated.")
        # Checked just above: the pool process runs this very task now, so the signal hits the right job.
        _send(lambda: app.control.revoke(job.task_id, terminate=True, signal=getattr(signal_module, signal)))
        return CancelResult(job.task_id, "terminated", job.worker,
                            f"Job {job.task_id} terminated with {signal} on {job.worker}.")
    # Not running yet: every running worker remembers the revoked id and discards the message when it
    # arrives. Record the outcome now, because a message in a paused or idle queue may not arrive for hours.
    _send(lambda: app.control.revoke(job.task_id))
    capture.write_rows([capture.make_row(
        job.task_id, JobState.REVOKED, task_name=job.task_name, finished_at=timezone.now(),
        exception_type="Revoked", exception_message=f"Cancelled by {actor.name} before it started.")])
    return CancelResult(job.task_id, "revoked", job.worker,
                        f"Job {job.task_id} revoked; it will not run.")


def _send(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except _broker_errors() as exc:
        raise BrokerUnavailable(f"Could not send the control command through the broker: {exc}.") from exc


# --- pause / resume -----------------------------------------------------------------------------------

def consumers_of(queue: str) -> list[str]:
    """Names of the workers currently consuming ``queue`` (asks every worker)."""
    app = brokers.celery_app()
    try:
        replies = app.control.inspect(timeout=conf.get("CONTROL_TIMEOUT")).active_queues() or {}
    except _broker_errors() as exc:
        raise BrokerUnavailable(f"Could not reach the workers through the broker: {exc}.") from exc
    return sorted(w for w, queues in replies.items() if any(q.get("name") == queue for q in queues or ()))


def pause(actor: Actor, queue: str) -> QueueResult:
    """Stop every worker consuming ``queue``; persist the pause so restarted workers keep it paused."""

    def run() -> QueueResult:
        _require_queue(queue)
        with transaction.atomic():
            state, _ = QueueState.objects.select_for_update().get_or_create(name=queue)
            if state.paused:
                raise InvalidState(f"Queue {queue!r} is already paused (since {state.paused_at:%Y-%m-%d %H:%M:%S}"
                                   f"{' by ' + state.paused_by.get_username() if state.paused_by else ''}).")
            workers = consumers_of(queue)
            state.paused, state.paused_at, state.paused_workers = True, timezone.now(), workers
            state.paused_by = actor.user
            state.save()
            if workers:
                app = brokers.celery_app()
                _send(lambda: app.control.cancel_consumer(queue, destination=workers, reply=True,
                                                          timeout=conf.get("CONTROL_TIMEOUT"), limit=len(workers)))
        names = ", ".join(workers) or "no worker was consuming it"
        return QueueResult(queue, True, workers, f"Queue {queue!r} paused ({names}); its messages stay in the "
                                                 "broker until it is resumed.")

    return _audited(actor, "pause_queue", [queue], {}, run)


def resume(actor: Actor, queue: str) -> QueueResult:
    """Tell the workers that consumed a paused queue to consume it again."""

    def run() -> QueueResult:
        _require_queue(queue)
        with transaction.atomic():
            state = QueueState.objects.select_for_update().filter(name=queue).first()
            if state is None or not state.paused:
                raise InvalidState(f"Queue {queue!r} is not paused.")
            # Only the workers that consumed it: a broadcast add_consumer would make every worker consume it.
            workers = list(state.paused_workers or [])
            state.paused, state.paused_at, state.paused_by, state.paused_workers = False, None, None, []
            state.save()
            if workers:
                app = brokers.celery_app()
                _send(lambda: app.control.add_consumer(queue, destination=workers, reply=True,
                                                       timeout=conf.get("CONTROL_TIMEOUT"), limit=len(workers)))
        return QueueResult(queue, False, workers,
                           f"Queue {queue!r} resumed ({', '.join(workers) or 'no worker had consumed it'}).")

    return _audited(actor, "resume_queue", [queue], {}, run)


def paused_queue_names() -> list[str]:
    """Names of the queues an operator paused."""
    return list(QueueState.objects.filter(paused=True).values_list("name", flat=True))


def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    """Drop paused queues from a starting worker's selection, before it consumes anything."""
    try:
        queues = sender.app.amqp.queues
        selected = set(queues.consume_from)
        paused = [name for name in paused_queue_names() if name in selected]
        if paused:
            queues.deselect(paused)
            _remember_paused_worker(paused, sender.hostname)
            logger.warning("Queues %s are paused by an operator: this worker does not consume them until they "
                           "are resumed.", ", ".join(paused))
    except Exception:
        logger.exception("Could not apply paused queues at worker start")
    finally:
        _close_db()


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    """Stop consuming queues paused while this worker was starting (the pause broadcast missed it)."""
    try:
        consumer = sender
        paused = [n for n in paused_queue_names() if consumer.task_consumer
                  and consumer.task_consumer.consuming_from(n)]
        for name in paused:
            consumer.cancel_task_queue(name)
        if paused:
            _remember_paused_worker(paused, consumer.hostname)
    except Exception:
        logger.exception("Could not apply paused queues when the worker became ready")
    finally:
        _close_db()


def _remember_paused_worker(queues: list[str], worker: str) -> None:
    with transaction.atomic():
        for state in QueueState.objects.select_for_update().filter(name__in=queues, paused=True):
            if worker not in state.paused_workers:
                state.paused_workers = [*state.paused_workers, worker]
                state.save(update_fields=["paused_workers", "updated_at"])


def _close_db() -> None:
    # Runs in the worker's main process before the pool forks: a connection opened here must not be
    # inherited by the children.
    connection = connections[conf.get("DATABASE_ALIAS")]
    if not connection.in_atomic_block:
        connection.close()


def connect_worker_hooks() -> None:
    """Connect the worker start hooks (called from ``MonitoringConfig.ready()``)."""
    from celery import signals

    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid="jm_paused_init")
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="jm_paused_ready")


# --- purge and clear ----------------------------------------------------------------------------------

def purge(actor: Actor, queue: str) -> PurgeResult:
    """Delete the messages waiting in one queue; mark their PENDING records REVOKED."""

    def run() -> PurgeResult:
        _require_queue(queue)
        started = timezone.now()
        try:
            purged = brokers.purge_queue(brokers.celery_app(), queue)
        except _broker_errors() as exc:
            raise BrokerUnavailable(f"Could not purge queue {queue!r}: {exc}.") from exc
        # The purged messages will never reach a worker, so their records would stay PENDING forever.
        revoked = JobRun.objects.filter(queue=queue, state=JobState.PENDING, created_at__lte=started).update(
            state=JobState.REVOKED, finished_at=started, updated_at=started, exception_type="Purged",
            exception_message=f"Purged from queue {queue!r} by {actor.name}.")
        return PurgeResult(queue, purged, revoked, f"Purged {purged} waiting message(s) from queue {queue!r}.")

    return _audited(actor, "purge_queue", [queue], {}, run)


def clearable_jobs(queue: str, type: str = "all", older_than: Any = None) -> models.QuerySet:
    """The finished records of one queue that :func:`clear` would delete (validates the parameters)."""
    if type not in CLEAR_TYPES:
        raise InvalidOverride("type", f"must be one of {', '.join(CLEAR_TYPES)}, not {type!r}.", list(CLEAR_TYPES))
    before = parse_datetime_value(older_than, "older_than")
    qs = JobRun.objects.filter(queue=queue, state__in=CLEAR_TYPES[type])
    if before is not None:
        qs = qs.filter(finished_at__lt=before)
    return qs


def clear(actor: Actor, queue: str, type: str = "all", *, older_than: Any = None, dry_run: bool = False,
          progress: Callable[[int], None] | None = None) -> ClearResult:
    """Delete the finished records of one queue by outcome (completed, failed, all), in batches."""
    parameters = {"type": type, "older_than": older_than, "dry_run": dry_run}

    def run() -> ClearResult:
        qs = clearable_jobs(queue, type, older_than)
        _require_queue(queue)
        before = parse_datetime_value(older_than, "older_than")
        if dry_run:
            count = qs.count()
            return ClearResult(queue, type, before, count, True, f"Would delete {count} {type} record(s) of "
                                                                 f"queue {queue!r}.")
        deleted, batch = 0, conf.get("CLEAR_BATCH_SIZE")
        while True:
            # Short statements by id batch keep locks and WAL bursts small on a table of millions of rows.
            ids = list(qs.order_by().values_list("id", flat=True)[:batch])
            if not ids:
                break
            deleted += JobRun.objects.filter(id__in=ids).delete()[0]
            if progress:
                progress(deleted)
        return ClearResult(queue, type, before, deleted, False,
                           f"Deleted {deleted} {type} record(s) of queue {queue!r}.")

    return _audited(actor, "clear_jobs", [queue], parameters, run)


# --- bulk ---------------------------------------------------------------------------------------------

def select_jobs(filters: Mapping[str, Any]) -> models.QuerySet:
    """Jobs matching a bulk filter; raise :class:`InvalidOverride` naming a bad filter field."""
    filters = dict(filters or {})
    unknown = sorted(set(filters) - set(BULK_FILTERS))
    if unknown:
        raise InvalidOverride(f"filter.{unknown[0]}", f"unknown filter; use {', '.join(BULK_FILTERS)}.",
                              list(BULK_FILTERS))
    if not any(filters.get(k) not in (None, "", []) for k in BULK_FILTERS):
        raise InvalidOverride("filter", "give at least one filter; acting on every job needs an explicit filter "
                                        "such as a state.", list(BULK_FILTERS))
    qs = JobRun.objects.all()
    states = filters.get("state")
    if states:
        states = [states] if isinstance(states, str) else list(states)
        bad = [s for s in states if s not in JobState.values]
        if bad:
            raise InvalidOverride("filter.state", f"unknown state {bad[0]!r}.", list(JobState.values))
        qs = qs.filter(state__in=states)
    for key in ("task_name", "queue", "worker", "exception_type"):
        value = filters.get(key)
        if value not in (None, ""):
            if not isinstance(value, str) or not storable(value):
                raise InvalidOverride(f"filter.{key}", "must be a string without NUL characters (exact match).",
                                      "a string")
            qs = qs.filter(**{key: value})
    since = parse_datetime_value(filters.get("since"), "filter.since")
    until = parse_datetime_value(filters.get("until"), "filter.until")
    return qs.in_range(since, until)


def _eligible_states(action: str, parameters: Mapping[str, Any]) -> tuple[str, ...]:
    if action == "retry":
        return (*RETRYABLE_STATES, JobState.SUCCESS) if parameters.get("rerun") else RETRYABLE_STATES
    return CANCELLABLE_STATES


def _validate_bulk_parameters(action: str, parameters: Mapping[str, Any]) -> None:
    if action not in BULK_ACTIONS:
        raise InvalidOverride("action", f"must be one of {', '.join(BULK_ACTIONS)}, not {action!r}.",
                              list(BULK_ACTIONS))
    if action == "retry":
        parse_retry_overrides(parameters)
    else:
        extra = sorted(set(parameters) - {"signal"})
        if extra:
            raise InvalidOverride(f"parameters.{extra[0]}", "cancel takes only signal.", ["signal"])
        _check_signal(parameters.get("signal", "SIGTERM"))


def _selected_ids(ids: Sequence[str] | None, filters: Mapping[str, Any] | None,
                  limit: int | None = None) -> list[str]:
    cap = conf.get("BULK_MAX_ITEMS")
    if (ids is None) == (filters is None):
        raise InvalidOverride("ids", "give either ids (a list of task ids) or filter (an object), not both or "
                                     "neither.", ["ids", "filter"])
    if ids is not None:
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
            raise InvalidOverride("ids", "must be a list of task ids.", "a JSON array of strings")
        ids = list(dict.fromkeys(ids))
        if not all(map(storable, ids)):
            raise InvalidOverride("ids", "a task id cannot contain NUL characters.", "task ids without NUL")
        if not ids:
            raise InvalidOverride("ids", "is empty; select at least one job.", "1 or more task ids")
        if len(ids) > cap:
            raise InvalidOverride("ids", f"selects {len(ids)} jobs, more than MONITORING['BULK_MAX_ITEMS'] "
                                         f"({cap}).", f"1-{cap}")
        found = set(JobRun.objects.filter(task_id__in=ids).values_list("task_id", flat=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"No job with task id {', '.join(map(repr, missing[:5]))}"
                           f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}.")
        return ids
    if not isinstance(filters, Mapping):
        raise InvalidOverride("filter", "must be an object of filters.", list(BULK_FILTERS))
    if limit is not None:
        # An explicit limit takes the oldest matching jobs first and may be under the cap.
        return list(select_jobs(filters).order_by("created_at", "id").values_list("task_id", flat=True)[:limit])
    matched = list(select_jobs(filters).order_by("created_at", "id").values_list("task_id", flat=True)[:cap + 1])
    if len(matched) > cap:
        raise InvalidOverride("filter", f"matches more than MONITORING['BULK_MAX_ITEMS'] ({cap}) jobs; narrow it "
                                        "(for example with since/until) or give a limit.", list(BULK_FILTERS))
    return matched


def preview_bulk(actor: Actor, action: str, *, ids: Sequence[str] | None = None,
                 filters: Mapping[str, Any] | None = None,
                 parameters: Mapping[str, Any] | None = None, limit: int | None = None) -> BulkOperation:
    """Freeze the jobs a bulk action would act on and count them; nothing is acted on yet."""
    parameters = dict(parameters or {})
    _validate_bulk_parameters(action, parameters)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or
                              not 0 < limit <= conf.get("BULK_MAX_ITEMS")):
        raise InvalidOverride("limit", f"must be from 1 to {conf.get('BULK_MAX_ITEMS')}.",
                              f"1-{conf.get('BULK_MAX_ITEMS')}")
    task_ids = _selected_ids(ids, filters, limit)
    return BulkOperation.objects.create(
        action=action, parameters=storable_json(parameters),
        selection=storable_json({"ids": list(ids)} if ids is not None else {"filter": dict(filters or {})}),
        task_ids=task_ids, total=len(task_ids), status=BulkStatus.PREVIEW, created_by=actor.user,
        created_by_name=actor.name[:150], source=actor.source, client_address=actor.client_address)


def eligible_count(operation: BulkOperation) -> int:
    """How many of an operation's frozen jobs are in a state its action applies to now."""
    states = _eligible_states(operation.action, operation.parameters)
    return sum(JobRun.objects.filter(task_id__in=operation.task_ids[i:i + 10_000], state__in=states).count()
               for i in range(0, len(operation.task_ids), 10_000))


def bulk(actor: Actor, action: str, *, ids: Sequence[str] | None = None, filters: Mapping[str, Any] | None = None,
         parameters: Mapping[str, Any] | None = None, limit: int | None = None, inline: bool = False,
         progress: Callable[[BulkOperation], None] | None = None) -> BulkOperation:
    """Select and act at once (the selection is frozen now); large sets run in the background."""
    audit_params = {"action": action, "ids_count": len(ids) if isinstance(ids, list | tuple) else None,
                    "filter": filters, "parameters": parameters}
    try:
        operation = preview_bulk(actor, action, ids=ids, filters=filters, parameters=parameters, limit=limit)
    except ControlError as exc:
        record_action(actor, f"bulk_{action}"[:64], targets=list(ids or [])[:1000],
                      parameters=storable_json(audit_params),
                      outcome="rejected", detail=exc.message)
        raise
    return confirm_bulk(actor, operation.pk, inline=inline, progress=progress)


def confirm_bulk(actor: Actor, operation_id: Any, *, inline: bool = False,
                 progress: Callable[[BulkOperation], None] | None = None) -> BulkOperation:
    """Act on the jobs a preview froze: inline up to BULK_SYNC_LIMIT (or when asked), else in the background."""
    action = "bulk"

    def run() -> BulkOperation:
        nonlocal action
        with transaction.atomic():
            try:
                operation = BulkOperation.objects.select_for_update().get(pk=int(operation_id))
            except (BulkOperation.DoesNotExist, TypeError, ValueError):
                raise NotFound(f"No bulk operation {operation_id!r}.") from None
            action = f"bulk_{operation.action}"
            if operation.status != BulkStatus.PREVIEW:
                raise InvalidState(f"Bulk operation {operation.pk} is already {operation.status}; preview again to "
                                   "act a second time.")
            if operation.created_at < timezone.now() - timedelta(seconds=conf.get("BULK_PREVIEW_TTL")):
                raise InvalidState(f"The preview of bulk operation {operation.pk} is older than "
                                   f"{conf.get('BULK_PREVIEW_TTL')}s; preview again to see the current count.")
            background = not inline and operation.total > conf.get("BULK_SYNC_LIMIT")
            operation.status = BulkStatus.QUEUED if background else BulkStatus.RUNNING
            operation.started_at = None if background else timezone.now()
            operation.save(update_fields=["status", "started_at"])
        if background:
            try:
                sent = run_bulk_operation.apply_async((operation.pk,), queue=conf.get("CONTROL_QUEUE"))
            except _broker_errors() as exc:
                BulkOperation.objects.filter(pk=operation.pk).update(status=BulkStatus.PREVIEW)
                raise BrokerUnavailable(f"Could not start the background operation: {exc}.") from exc
            BulkOperation.objects.filter(pk=operation.pk).update(background_task_id=sent.id)
            operation.background_task_id = sent.id
            return operation
        return process_bulk_operation(operation.pk, progress=progress)

    def parameters() -> dict[str, Any]:
        op = BulkOperation.objects.filter(pk=operation_id).values("parameters", "total", "selection").first() \
            if str(operation_id).isdigit() else None
        return {"operation": operation_id, **(op or {})}

    try:
        operation = run()
    except ControlError as exc:
        record_action(actor, action, targets=[], parameters=storable_json(parameters()), outcome="rejected",
                      detail=exc.message)
        raise
    outcome = "started" if operation.status == BulkStatus.QUEUED else _bulk_outcome(operation)
    record_action(actor, action, targets=operation.task_ids[:1000], parameters=storable_json(parameters()),
                  outcome=outcome, detail=bulk_summary(operation), new_task_ids=operation.new_task_ids[:1000])
    return operation


def _bulk_outcome(operation: BulkOperation) -> str:
    if operation.status == BulkStatus.FAILED:
        return "failed"
    return "ok" if operation.failed == 0 and operation.skipped == 0 else "partial"


def bulk_summary(operation: BulkOperation) -> str:
    """One line describing a bulk operation's progress."""
    if operation.status in (BulkStatus.PREVIEW, BulkStatus.QUEUED):
        return f"{operation.action} of {operation.total} job(s) {operation.get_status_display().lower()}."
    return (f"{operation.action}: {operation.processed}/{operation.total} processed, {operation.succeeded} done, "
            f"{operation.skipped} skipped, {operation.failed} failed.")


def process_bulk_operation(operation_id: int,
                           progress: Callable[[BulkOperation], None] | None = None) -> BulkOperation:
    """Act on a frozen operation in batches, saving progress after each (resumes after a crash)."""
    operation = BulkOperation.objects.get(pk=operation_id)
    if operation.status in (BulkStatus.DONE, BulkStatus.FAILED, BulkStatus.PREVIEW):
        return operation
    actor = Actor(user=operation.created_by, source=operation.source, client_address=operation.client_address)
    BulkOperation.objects.filter(pk=operation.pk).update(status=BulkStatus.RUNNING,
                                                         started_at=operation.started_at or timezone.now())
    size = conf.get("BULK_BATCH_SIZE")
    params = operation.parameters
    options = parse_retry_overrides(params) if operation.action == "retry" else None
    try:
        # processed is the cursor: a redelivered task continues where the crashed one stopped; retries
        # carry per-job idempotency keys, so a batch done twice sends nothing twice.
        for start in range(operation.processed, operation.total, size):
            batch = operation.task_ids[start:start + size]
            jobs = {j.task_id: j for j in JobRun.objects.filter(task_id__in=batch)}
            snapshot = None
            if operation.action == "cancel" and any(j.state == JobState.STARTED for j in jobs.values()):
                snapshot = inspect_workers()
            done, skipped, failed, problems, new_ids = 0, 0, 0, [], []
            for task_id in batch:
                job = jobs.get(task_id)
                try:
                    if job is None:
                        raise NotFound(f"Job {task_id} no longer exists.")
                    if operation.action == "retry":
                        _check_retryable(job, options)
                        result = _retry_job(actor, job, options, idempotency_key=f"bulk:{operation.pk}:{task_id}",
                                            fingerprint_data=params)
                        new_ids.append(result.new_task_id)
                    else:
                        _cancel_job(actor, job, signal=params.get("signal", "SIGTERM"), snapshot=snapshot)
                    done += 1
                except ControlError as exc:
                    skipped += 1
                    problems.append({"task_id": task_id, "reason": exc.message})
                except Exception as exc:
                    failed += 1
                    problems.append({"task_id": task_id, "reason": f"{type(exc).__name__}: {exc}"})
                    logger.exception("Bulk %s failed for job %s", operation.action, task_id)
            operation.processed, operation.succeeded = start + len(batch), operation.succeeded + done
            operation.skipped, operation.failed = operation.skipped + skipped, operation.failed + failed
            operation.problems = (operation.problems + problems)[:1000]
            operation.new_task_ids = operation.new_task_ids + new_ids
            operation.save(update_fields=["processed", "succeeded", "skipped", "failed", "problems", "new_task_ids"])
            if progress:
                progress(operation)
        operation.status = BulkStatus.DONE
    except Exception as exc:
        operation.status = BulkStatus.FAILED
        operation.problems = [*operation.problems, {"task_id": "", "reason": f"{type(exc).__name__}: {exc}"}][:1001]
        logger.exception("Bulk operation %s failed", operation.pk)
    operation.finished_at = timezone.now()
    operation.save(update_fields=["status", "finished_at", "problems"])
    return operation


@shared_task(name="monitoring.control.run_bulk_operation", acks_late=True, ignore_result=True)
def run_bulk_operation(operation_id: int) -> str:
    """Run a confirmed bulk operation in the background and audit its outcome."""
    operation = process_bulk_operation(operation_id)
    actor = Actor(user=operation.created_by, source=operation.source, client_address=operation.client_address)
    record_action(actor, f"bulk_{operation.action}", targets=operation.task_ids[:1000],
                  parameters={"operation": operation.pk, "total": operation.total},
                  outcome=_bulk_outcome(operation), detail=bulk_summary(operation),
                  new_task_ids=operation.new_task_ids[:1000])
    return bulk_summary(operation)


def as_dict(result: Any) -> dict[str, Any]:
    """A result object as JSON-ready data (for the API and commands)."""
    data = storable_json(asdict(result))
    if hasattr(result, "message"):
        data["message"] = result.message
    return data
