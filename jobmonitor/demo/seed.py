"""Seed a realistic job history for the demo: 30 days, several queues and job types, every kind of outcome.

Rows are built in memory and written with ``bulk_create`` in large batches, so 30 days take seconds.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.bulk import insert_objects
from monitoring.models import JobOrigin, JobRun, JobState


@dataclass(frozen=True)
class JobType:
    name: str
    queue: str
    per_hour: float  # average arrivals per hour at the daily peak
    runtime: tuple[float, float]  # log-normal-ish range in seconds
    failure_rate: float
    retry_rate: float
    errors: tuple[tuple[str, str], ...]
    origin: str = JobOrigin.CELERY


JOB_TYPES = (
    JobType("jobmonitor.tasks.send_email", "emails", 60, (0.05, 0.8), 0.03, 0.06,
            (("DeliveryError", "550 mailbox unavailable: user{n}@example.com"),
             ("DeliveryError", "421 relay busy for user{n}@example.com"),
             ("TimeoutError", "SMTP connection to mx{n}.example.com timed out"))),
    JobType("jobmonitor.tasks.resize_image", "media", 45, (0.1, 1.5), 0.04, 0.0,
            (("ValueError", "image {n} is not a valid JPEG"),
             ("MemoryError", "image {n} too large to decode"))),
    JobType("jobmonitor.tasks.generate_report", "reports", 6, (20, 900), 0.06, 0.02,
            (("ReportTimeout", "query for sales exceeded 30s"),
             ("OperationalError", "could not serialize access due to concurrent update"))),
    JobType("jobmonitor.tasks.add", "default", 20, (0.001, 0.01), 0.0, 0.0, ()),
    JobType("billing.sync_invoices", "tracked", 1, (30, 240), 0.08, 0.0,
            (("HTTPError", "502 Bad Gateway from billing provider"),), JobOrigin.TRACKED),
)
WORKERS = ("celery@web-1", "celery@web-2", "celery@batch-1")
TRACEBACK = """Traceback (most recent call last):
  File "/app/.venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task
    R = retval = fun(*args, **kwargs)
  File "/app/jobmonitor/tasks.py", line {line}, in {func}
    {statement}
{exc_type}: {message}
"""


def _diurnal(hour: int) -> float:
    """Relative load by hour of day: quiet at night, busy in the afternoon."""
    return 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 5) / 16)) if 5 <= hour <= 21 else 0.25


def _runtime(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def build_history(days: int = 30, now: datetime | None = None, seed: int = 7) -> list[JobRun]:
    """Build (unsaved) JobRun rows for ``days`` of history ending at ``now``."""
    rng = random.Random(seed)
    now = now or timezone.now()
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    rows: list[JobRun] = []
    hour = start
    while hour < now - timedelta(minutes=20):
        load = _diurnal(hour.hour)
        for job in JOB_TYPES:
            for _ in range(_poisson(rng, job.per_hour * load)):
                created = hour + timedelta(seconds=rng.uniform(0, 3600))
                if created >= now - timedelta(minutes=20):
                    continue
                rows.append(_finished_run(rng, job, created))
        hour += timedelta(hours=1)
    rows.extend(_current_runs(rng, now))
    return rows


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means used here.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _finished_run(rng: random.Random, job: JobType, created: datetime) -> JobRun:
    wait = rng.expovariate(1 / (2.0 if job.queue != "reports" else 20.0))
    started = created + timedelta(seconds=wait)
    runtime = _runtime(rng, *job.runtime)
    roll = rng.random()
    retries = 0
    state, exc_type, message, trace, result = JobState.SUCCESS, "", "", "", ""
    if roll < job.failure_rate and job.errors:
        state = JobState.FAILURE
        exc_type, template = rng.choice(job.errors)
        message = template.format(n=rng.randint(1, 400))
        trace = TRACEBACK.format(line=rng.randint(20, 80), func=job.name.rsplit(".", 1)[-1],
                                 statement="raise " + exc_type + "(...)", exc_type=exc_type, message=message)
    elif roll < job.failure_rate + 0.003:
        state, exc_type, message = JobState.REVOKED, "Revoked", "Task revoked."
    else:
        result = "ok" if job.queue != "emails" else f"sent to user{rng.randint(1, 500)}@example.com"
    if rng.random() < job.retry_rate:
        retries = rng.randint(1, 3)
        started += timedelta(seconds=2 * retries)
    finished = started + timedelta(seconds=runtime)
    return JobRun(
        task_id=str(uuid.uuid4()) if job.origin == JobOrigin.CELERY else f"tracked-{uuid.uuid4()}",
        task_name=job.name, origin=job.origin, queue=job.queue, routing_key=job.queue, state=state,
        args=_args(rng, job), kwargs={}, result=result, exception_type=exc_type, exception_message=message,
        traceback=trace, worker=rng.choice(WORKERS), retries=retries, priority=None,
        created_at=created, published_at=created, received_at=created + timedelta(seconds=wait * 0.5),
        started_at=started, finished_at=finished, updated_at=finished, wait_time=(started - created).total_seconds(),
        runtime=runtime,
    )


def _args(rng: random.Random, job: JobType) -> list:
    if job.queue == "emails":
        return [f"user{rng.randint(1, 500)}@example.com", "Your receipt"]
    if job.queue == "media":
        return [rng.randint(1, 10_000)]
    if job.queue == "reports":
        return [rng.choice(["sales", "churn", "inventory"])]
    return [rng.randint(1, 9), rng.randint(1, 9)]


def _current_runs(rng: random.Random, now: datetime) -> list[JobRun]:
    """Jobs in flight right now: running, waiting, scheduled and stuck ones."""
    rows = []

    def run(name: str, queue: str, state: str, created: datetime, started: datetime | None = None,
            eta: datetime | None = None) -> JobRun:
        return JobRun(task_id=str(uuid.uuid4()), task_name=name, queue=queue, routing_key=queue, state=state,
                      args=[rng.randint(1, 100)], kwargs={}, worker=rng.choice(WORKERS) if started else "",
                      created_at=created, published_at=created, received_at=started, started_at=started,
                      updated_at=started or created, eta=eta,
                      wait_time=(started - created).total_seconds() if started else None)

    # Stuck: active far longer than the 10-minute threshold, one per severity band.
    for minutes in (15, 45, 95, 180):
        began = now - timedelta(minutes=minutes)
        rows.append(run("jobmonitor.tasks.generate_report", "reports", JobState.STARTED, began, began))
    for seconds in (3, 8, 20):
        began = now - timedelta(seconds=seconds)
        rows.append(run("jobmonitor.tasks.resize_image", "media", JobState.STARTED, began, began))
    for seconds in (1, 4, 9, 12, 30):
        rows.append(run("jobmonitor.tasks.send_email", "emails", JobState.PENDING, now - timedelta(seconds=seconds)))
    for minutes in (5, 30, 120):
        rows.append(run("jobmonitor.tasks.add", "default", JobState.PENDING, now - timedelta(minutes=1),
                        eta=now + timedelta(minutes=minutes)))
    return rows


def seed_history(days: int = 30, now: datetime | None = None) -> int:
    """Write ``days`` of demo history; return the number of job runs created."""
    return insert_objects(build_history(days=days, now=now))
