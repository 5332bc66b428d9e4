"""Seeded job records for the read-side tests, kept in memory too so tests can compute figures themselves."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from monitoring.models import JobRun, JobState
from tests.factories import aware

# The fixed clock of the read-side tests (not aligned to any bucket on purpose).
NOW = aware(2026, 11, 22, 12, 7, 31)
TASKS = {"app.send_email": "emails", "app.report": "reports", "app.resize": "media", "app.add": "default"}


@dataclass
class Row:
    task_id: str
    task_name: str
    queue: str
    state: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    runtime: float | None
    exception_type: str = ""
    exception_message: str = ""


def seed_history(count: int = 600, days: int = 30, seed: int = 7, now: datetime = NOW) -> list[Row]:
    """Create ``count`` finished jobs spread over ``days`` before ``now``; return them as plain rows."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for _ in range(count):
        task = rng.choice(sorted(TASKS))
        finished = now - timedelta(seconds=rng.uniform(1, days * 86_400))
        runtime = round(rng.lognormvariate(0, 1.5), 4)
        roll = rng.random()
        state = (JobState.SUCCESS if roll < 0.8 else JobState.FAILURE if roll < 0.92
                 else JobState.REVOKED if roll < 0.96 else JobState.LOST)
        started = finished - timedelta(seconds=runtime)
        exc_type, message = "", ""
        if state == JobState.FAILURE:
            exc_type, message = rng.choice([
                ("TimeoutError", f"query {rng.randint(1, 999)} exceeded {rng.randint(10, 60)}s"),
                ("DeliveryError", f"550 mailbox unavailable: user{rng.randint(1, 50)}@example.com"),
                ("KeyError", f"'{uuid.uuid4()}'"),
            ])
        rows.append(Row(str(uuid.uuid4()), task, TASKS[task], state, started - timedelta(seconds=0.5), started,
                        finished, runtime if state in (JobState.SUCCESS, JobState.FAILURE) else None,
                        exc_type, message))
    JobRun.objects.bulk_create([
        JobRun(task_id=r.task_id, task_name=r.task_name, queue=r.queue, state=r.state, created_at=r.created_at,
               published_at=r.created_at, started_at=r.started_at, finished_at=r.finished_at, runtime=r.runtime,
               updated_at=r.finished_at or r.created_at, exception_type=r.exception_type,
               exception_message=r.exception_message, worker="celery@seed")
        for r in rows
    ])
    return rows


def finished_in(rows: list[Row], since: datetime | None, until: datetime) -> list[Row]:
    return [r for r in rows if r.finished_at and (since is None or r.finished_at >= since) and r.finished_at < until]


def expected_rate(rows: list[Row]) -> float | None:
    """Success rate as the API defines it: successes among successes, failures and lost jobs."""
    good = sum(r.state == JobState.SUCCESS for r in rows)
    bad = sum(r.state in (JobState.FAILURE, JobState.LOST) for r in rows)
    return round(100 * good / (good + bad), 2) if good + bad else None
