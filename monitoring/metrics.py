"""Read-side services: metrics, trends, stats, timeline, overlaps, stuck jobs, error groups, health.

Admin pages, the API, the live stream, Prometheus and commands all call these functions, so a figure is
computed in one place. Every function takes ``now`` so tests can fix the clock. Long ranges read the
rollups (``monitoring.rollups.aggregate``); recent figures read ``JobRun`` through its indexes; broker
depths and worker replies come cached from ``brokers`` and ``workers``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Count, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import conf, rollups, search, workers
from .brokers import celery_app, configured_queue_names, queue_depths, read_connection
from .models import ACTIVE_STATES, JobRun, JobState, QueueState, storable
from .rollups import DAY, HOUR, Figures, normalise_message

RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24),
                                "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERIODS = ("24h", "7d", "30d")
# Series resolution per trends period: hourly points up to a week, daily points for a month.
PERIOD_STEPS = {"24h": HOUR, "7d": HOUR, "30d": DAY}
# Stuck-job severities by minutes active: (lower bound, name), checked from the top.
SEVERITIES: tuple[tuple[int, str], ...] = ((120, "critical"), (60, "high"), (30, "medium"), (0, "low"))


def _now(now: datetime | None) -> datetime:
    return now or timezone.now()


def range_window(name: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """Return ``(since, until)`` for a named range such as ``"24h"``."""
    until = _now(now)
    return until - RANGES[name], until


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


# --- queues ---------------------------------------------------------------------------------------------

def distinct_values(column: str, limit: int = 1_000) -> list[str]:
    """Distinct non-empty values of an indexed ``JobRun`` column, without scanning the table.

    On PostgreSQL a recursive query hops through the index one value at a time (a "loose index scan"),
    so the cost grows with the number of distinct values, not of rows. ``exception_type`` walks the
    partial index of failed rows.
    """
    if column not in ("queue", "task_name", "exception_type"):
        raise ValueError(column)
    connection = connections[JobRun.objects.db]
    if connection.vendor != "postgresql":
        return sorted(JobRun.objects.exclude(**{column: ""}).order_by().values_list(column, flat=True)
                      .distinct()[:limit])
    table = connection.ops.quote_name(JobRun._meta.db_table)
    # "<> ''" is implied by "> ''" but not by "> v.value" (a parameter at planning time): stated, it lets
    # the recursive step use a partial index on non-empty values (exception_type's).
    sql = (f"WITH RECURSIVE v AS ((SELECT {column} AS value FROM {table} WHERE {column} > '' "
           f"ORDER BY {column} LIMIT 1) UNION ALL SELECT (SELECT {column} FROM {table} WHERE {column} > v.value "
           f"AND {column} <> '' ORDER BY {column} LIMIT 1) FROM v WHERE v.value IS NOT NULL) "
           f"SELECT value FROM v WHERE value IS NOT NULL LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


def queue_sources() -> dict[str, set[str]]:
    """Every known queue and where it is known from: configured, consumed by a worker, seen in records."""
    report = workers.workers()
    sources: dict[str, set[str]] = defaultdict(set)
    for name in configured_queue_names():
        sources[name].add("configured")
    for worker_queues in report.queues_by_worker.values():
        for name in worker_queues:
            sources[name].add("consumed")
    for name in distinct_values("queue"):
        sources[name].add("records")
    for name in QueueState.objects.values_list("name", flat=True):
        sources[name].add("queue_state")
    return sources


def queues(now: datetime | None = None) -> dict[str, Any]:
    """List every known queue with its broker depth, consumers and paused flag."""
    sources = queue_sources()
    names = sorted(sources)
    depth = queue_depths(names)
    report = workers.workers()
    paused = {q.name: q for q in QueueState.objects.filter(name__in=names)}
    return {
        "timestamp": _iso(_now(now)),
        "broker": {"available": depth.available, "transport": depth.transport, "error": depth.error},
        "workers_available": report.available,
        "queues": [
            {"name": name, "depth": depth.depths.get(name) if depth.available else None,
             "consumers": len(report.consumers(name)) if report.available else None,
             "workers": report.consumers(name), "paused": bool(paused.get(name) and paused[name].paused),
             "paused_at": _iso(paused[name].paused_at) if name in paused else None,
             "sources": sorted(sources[name])}
            for name in names
        ],
    }


def queue_overview(now: datetime | None = None) -> dict[str, Any]:
    """``queues`` with what a page shows beside the table: jobs waiting in the broker over all those queues
    (None when the broker is unreachable) and the workers online (from the cached worker report)."""
    answer = queues(now)
    report = workers.workers()
    waiting = sum(q["depth"] or 0 for q in answer["queues"]) if answer["broker"]["available"] else None
    return {**answer, "waiting": waiting,
            "workers": {"available": report.available,
                        "online": len(report.online) if report.available else None}}


def queue_exists(name: str) -> bool:
    """Whether ``name`` is a known queue (configured, consumed, seen in records or paused)."""
    if not storable(name):
        return False
    if name in configured_queue_names() or QueueState.objects.filter(name=name).exists():
        return True
    if any(name in qs for qs in workers.workers().queues_by_worker.values()):
        return True
    return JobRun.objects.filter(queue=name).exists()


# --- metrics --------------------------------------------------------------------------------------------

def success_rate_of_last(sample: int) -> tuple[float | None, int]:
    """Success rate (%) over the ``sample`` most recently finished jobs, and how many were considered."""
    recent = JobRun.objects.filter(finished_at__isnull=False).order_by("-finished_at").values("id")[:sample]
    counts = dict(JobRun.objects.filter(id__in=recent).order_by().values_list("state").annotate(n=Count("id")))
    figures = Figures(succeeded=counts.get(JobState.SUCCESS, 0), failed=counts.get(JobState.FAILURE, 0),
                      revoked=counts.get(JobState.REVOKED, 0), lost=counts.get(JobState.LOST, 0))
    return figures.success_rate, figures.total


def processing_rate(now: datetime | None = None, window: int | None = None) -> float:
    """Jobs finished per minute over the trailing ``PROCESSING_RATE_WINDOW`` seconds."""
    now = _now(now)
    window = window or conf.get("PROCESSING_RATE_WINDOW")
    finished = JobRun.objects.filter(finished_at__gte=now - timedelta(seconds=window), finished_at__lt=now).count()
    return round(finished * 60.0 / window, 3)


def _queue_counts(now: datetime, queue: str | None = None) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"active": 0, "delayed": 0, "completed": 0,
                                                             "failed": 0})
    active = JobRun.objects.active()
    scheduled = JobRun.objects.scheduled(now)
    if queue is not None:
        active, scheduled = active.filter(queue=queue), scheduled.filter(queue=queue)
    for name, n in active.order_by().values_list("queue").annotate(n=Count("id")):
        counts[name]["active"] = n
    for name, n in scheduled.order_by().values_list("queue").annotate(n=Count("id")):
        counts[name]["delayed"] = n
    since = now - timedelta(seconds=conf.get("METRICS_WINDOW"))
    (per_queue,) = rollups.read(since, now, [rollups.Grouping(("queue",), runtimes=False)])
    for (name,), figures in per_queue.items():
        if queue is None or name == queue:
            counts[name]["completed"] += figures.succeeded
            counts[name]["failed"] += figures.failures
    return counts


def metrics(now: datetime | None = None) -> dict[str, Any]:
    """Per-queue and total counts, success rate, processing rate and workers online."""
    now = _now(now)
    sources = queue_sources()
    counts = _queue_counts(now)
    names = sorted(set(sources) | set(counts))
    depth = queue_depths(names)
    paused = set(QueueState.objects.filter(paused=True).values_list("name", flat=True))
    rows = []
    for name in names:
        row = {"queue": name, "waiting": depth.depths.get(name) if depth.available else None,
               **counts.get(name, {"active": 0, "delayed": 0, "completed": 0, "failed": 0}),
               "paused": name in paused}
        rows.append(row)
    totals = {key: sum(row[key] or 0 for row in rows) for key in ("waiting", "active", "completed", "failed",
                                                                   "delayed")}
    if not depth.available:
        totals["waiting"] = None
    rate, sample = success_rate_of_last(conf.get("SUCCESS_RATE_SAMPLE"))
    report = workers.workers()
    return {
        "timestamp": _iso(now),
        "window_seconds": conf.get("METRICS_WINDOW"),
        "queues": rows,
        "totals": totals,
        "success_rate": rate,
        "success_rate_sample": sample,
        "processing_rate": processing_rate(now),
        "workers": {"available": report.available, "online": len(report.online) if report.available else None,
                    "names": report.online, "checked_at": _iso(report.checked_at)},
        "broker": {"available": depth.available, "transport": depth.transport, "error": depth.error},
    }


def queue_metrics(name: str, now: datetime | None = None, active_limit: int = 50) -> dict[str, Any]:
    """One queue's counts, depth, pause flag and its active jobs (longest running first)."""
    now = _now(now)
    counts = _queue_counts(now, queue=name).get(name, {"active": 0, "delayed": 0, "completed": 0, "failed": 0})
    depth = queue_depths([name])
    state = QueueState.objects.filter(name=name).first()
    active = (JobRun.objects.active().filter(queue=name).order_by(Coalesce("started_at", "received_at"), "id")
              .values("task_id", "task_name", "state", "worker", "started_at", "received_at", "retries")
              [:active_limit])
    return {
        "timestamp": _iso(now),
        "queue": name,
        "waiting": depth.depths.get(name) if depth.available else None,
        **counts,
        "paused": bool(state and state.paused),
        "broker": {"available": depth.available, "transport": depth.transport, "error": depth.error},
        "active_jobs": [
            {"task_id": job["task_id"], "task_name": job["task_name"], "state": job["state"],
             "worker": job["worker"], "started_at": _iso(job["started_at"] or job["received_at"]),
             "running_seconds": _round(_running_seconds(job["started_at"] or job["received_at"], now)),
             "retries": job["retries"]}
            for job in active
        ],
    }


def _running_seconds(start: datetime | None, now: datetime) -> float | None:
    return max((now - start).total_seconds(), 0.0) if start else None


# --- trends and stats ------------------------------------------------------------------------------------

def _figures_summary(figures: Figures) -> dict[str, Any]:
    return {
        "successful": figures.succeeded,
        "failed": figures.failures,
        "revoked": figures.revoked,
        "total": figures.total,
        "success_rate": figures.success_rate,
        "avg_processing_time": _round(figures.average_runtime),
        "p50_processing_time": _round(figures.percentile(0.50)),
        "p95_processing_time": _round(figures.percentile(0.95)),
    }


def _steps(since: datetime, until: datetime, step: int) -> list[datetime]:
    first = rollups.floor_time(since, step)
    count = int((until - first).total_seconds() // step) + (0 if (until - first).total_seconds() % step == 0 else 1)
    return [first + timedelta(seconds=step * i) for i in range(count)]


def trends(period: str = "24h", now: datetime | None = None) -> dict[str, Any]:
    """Outcomes and processing times per queue and per task name over a period, with a bucketed series."""
    since, until = range_window(period, now)
    step = PERIOD_STEPS[period]
    per_step_queue, per_step_task, pairs = rollups.read(since, until, [
        rollups.Grouping(("step", "queue"), runtimes=False), rollups.Grouping(("step", "task_name"), runtimes=False),
        rollups.Grouping(("task_name", "queue"))], step=step)
    steps = _steps(since, until, step)

    def describe(kind: str, series: dict[tuple[Any, ...], Figures], position: int) -> list[dict[str, Any]]:
        points: dict[str, dict[datetime, Figures]] = defaultdict(dict)
        for (start, key), figures in series.items():
            points[key][start] = figures
        summaries = rollups.fold(pairs, [position])
        out = []
        for (key,), summary in sorted(summaries.items()):
            by_start = points.get(key, {})
            out.append({kind: key, "period": period, **_figures_summary(summary), "series": [
                {"start": _iso(start), "successful": by_start[start].succeeded if start in by_start else 0,
                 "failed": by_start[start].failures if start in by_start else 0,
                 "total": by_start[start].total if start in by_start else 0}
                for start in steps
            ]})
        return out

    overall = Figures()
    for figures in pairs.values():
        overall.add(figures)
    return {"period": period, "since": _iso(since), "until": _iso(until), "step_seconds": step,
            "totals": _figures_summary(overall), "queues": describe("queue", per_step_queue, 1),
            "tasks": describe("task_name", per_step_task, 0)}


def trend_series(period: str = "24h", task_name: str | None = None,
                 now: datetime | None = None) -> list[dict[str, Any]]:
    """The bucketed series of ``trends`` for all jobs, or one task name, in one (empty without any job)."""
    since, until = range_window(period, now)
    step = PERIOD_STEPS[period]
    by = ("step", "task_name") if task_name else ("step",)
    (data,) = rollups.read(since, until, [rollups.Grouping(by, runtimes=False)], step=step)
    points = {key[0]: figures for key, figures in data.items() if not task_name or key[1] == task_name}
    if not points:
        return []
    empty = Figures()
    return [{"start": _iso(start), "successful": figures.succeeded, "failed": figures.failures,
             "total": figures.total}
            for start, figures in ((start, points.get(start, empty)) for start in _steps(since, until, step))]


def stats(since: datetime, until: datetime, now: datetime | None = None) -> dict[str, Any]:
    """Per job type: runs, success rate, average duration, last run and current status; plus a summary."""
    now = _now(now)
    (per_task_keyed,) = rollups.read(since, until, [rollups.Grouping(("task_name",))])
    per_task = {name: figures for (name,), figures in per_task_keyed.items()}
    running = dict(JobRun.objects.active().order_by().values_list("task_name").annotate(n=Count("id")))
    names = sorted(set(per_task) | set(running))
    last = last_runs(names)
    overall = Figures()
    for figures in per_task.values():
        overall.add(figures)
    job_types = []
    for name in names:
        figures = per_task.get(name, Figures())
        latest = last.get(name)
        job_types.append({
            "task_name": name,
            "total_runs": figures.total,
            "successful": figures.succeeded,
            "failed": figures.failures,
            "success_rate": figures.success_rate,
            "average_duration": _round(figures.average_runtime),
            "p95_duration": _round(figures.percentile(0.95)),
            "running": running.get(name, 0),
            "last_run_at": _iso(latest.started_at or latest.created_at) if latest else None,
            "last_state": latest.state if latest else None,
            "current_status": "running" if running.get(name) else (latest.state if latest else None),
        })
    return {"since": _iso(since), "until": _iso(until),
            "summary": {"total": overall.total, "success_rate": overall.success_rate,
                        "average_duration": _round(overall.average_runtime), "running": sum(running.values())},
            "job_types": job_types}


def totals(since: datetime, until: datetime, task_name: str | None = None) -> dict[str, Any]:
    """Finished jobs in the range, of one task name or of all: total, failed, success rate, average duration.

    The figures of ``stats``' summary without its per-type rows (what a "previous period" needs).
    """
    (per_task,) = rollups.read(since, until, [rollups.Grouping(("task_name",))])
    figures = Figures()
    for (name,), part in per_task.items():
        if task_name is None or name == task_name:
            figures.add(part)
    return {"total": figures.total, "failed": figures.failures, "success_rate": figures.success_rate,
            "average_duration": _round(figures.average_runtime)}


def last_runs(task_names: Iterable[str]) -> dict[str, JobRun]:
    """The most recent run of each task name (two queries, one index probe per name)."""
    names = list(task_names)
    if not names:
        return {}
    connection = connections[JobRun.objects.db]
    table = connection.ops.quote_name(JobRun._meta.db_table)
    values = ", ".join(["(%s)"] * len(names))
    sql = (f"WITH names(name) AS (VALUES {values}) SELECT (SELECT j.id FROM {table} j WHERE j.task_name = names.name "
           f"ORDER BY j.created_at DESC, j.id DESC LIMIT 1) FROM names")
    with connection.cursor() as cursor:
        cursor.execute(sql, names)
        ids = [row[0] for row in cursor.fetchall() if row[0] is not None]
    return {run.task_name: run for run in JobRun.objects.filter(id__in=ids).only(
        "id", "task_name", "state", "created_at", "started_at", "finished_at")}


# --- timeline and overlaps -------------------------------------------------------------------------------

BAR_COLUMNS = ("task_id", "task_name", "queue", "state", "started_at", "finished_at", "runtime")


def _bars(since: datetime, until: datetime, now: datetime, task_name: str | None) -> tuple[list[dict], bool]:
    """The executions that started in the range (the latest ``TIMELINE_MAX_BARS``), and those started before it
    that still run, oldest first.

    A job that started two hours ago and runs now ran through the last hour: leaving it out hid exactly the long
    jobs a timeline is opened for. Those are read through the active-jobs partial index (a few rows). A job that
    started before the range and has finished since is not included: finding it would scan every job finished in
    the range.
    """
    limit = conf.get("TIMELINE_MAX_BARS")
    in_range = JobRun.objects.filter(started_at__gte=since, started_at__lt=until)
    earlier = JobRun.objects.active().filter(started_at__lt=since)
    if task_name:
        in_range, earlier = in_range.filter(task_name=task_name), earlier.filter(task_name=task_name)
    rows = list(in_range.order_by("-started_at", "-id").values_list(*BAR_COLUMNS)[:limit + 1])
    truncated = len(rows) > limit
    rows = rows[:limit]
    rows += earlier.order_by("-started_at", "-id").values_list(*BAR_COLUMNS)[:limit]
    bars = []
    for task_id, name, queue, state, started, end, runtime in reversed(rows):
        if end is None and runtime is not None:
            end = started + timedelta(seconds=runtime)
        bars.append({"task_id": task_id, "task_name": name, "queue": queue,
                     "status": "running" if state in ACTIVE_STATES else state, "start": started, "end": end,
                     "duration": _round(((end or now) - started).total_seconds())})
    return bars, truncated


def _render_bar(bar: dict[str, Any]) -> dict[str, Any]:
    return {**bar, "start": _iso(bar["start"]), "end": _iso(bar["end"])}


def timeline(since: datetime, until: datetime, task_name: str | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """Executions that started in the range, and earlier ones still running, as bars (start, end, status)."""
    bars, truncated = _bars(since, until, _now(now), task_name)
    return _timeline(since, until, task_name, bars, truncated)


def _timeline(since: datetime, until: datetime, task_name: str | None, bars: list[dict[str, Any]],
              truncated: bool) -> dict[str, Any]:
    return {"since": _iso(since), "until": _iso(until), "task_name": task_name or None,
            "truncated": truncated, "bars": [_render_bar(bar) for bar in bars]}


def timeline_with_overlaps(since: datetime, until: datetime, task_name: str | None = None,
                           now: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``timeline`` and ``overlaps`` of the same range from one read of the executions (the dashboard)."""
    now = _now(now)
    bars, truncated = _bars(since, until, now, task_name)
    timeline = _timeline(since, until, task_name, bars, truncated)
    # The groups list the bars the timeline has already rendered (the same dicts, not copies).
    return timeline, _overlaps(since, until, now, bars, truncated, rendered=timeline["bars"])


def overlap_groups(intervals: list[tuple[datetime, datetime, Any]]) -> list[dict[str, Any]]:
    """Group intervals that ran at the same time; for each group, the time two or more ran together.

    Intervals touching end-to-start do not overlap. Returns groups of two or more, in time order.
    """
    groups: list[list[tuple[datetime, datetime, Any]]] = []
    reach: datetime | None = None
    for interval in sorted(intervals, key=lambda item: (item[0], item[1])):
        if groups and reach is not None and interval[0] < reach:
            groups[-1].append(interval)
            reach = max(reach, interval[1])
        else:
            groups.append([interval])
            reach = interval[1]
    result = []
    for members in groups:
        if len(members) < 2:
            continue
        events = sorted([(start, 1) for start, _, _ in members] + [(end, -1) for _, end, _ in members],
                        key=lambda event: (event[0], event[1]))
        running, peak, overlap, previous = 0, 0, 0.0, None
        for moment, delta in events:
            if previous is not None and running >= 2:
                overlap += (moment - previous).total_seconds()
            running += delta
            peak = max(peak, running)
            previous = moment
        result.append({"start": min(m[0] for m in members), "end": max(m[1] for m in members),
                       "overlap_seconds": round(overlap, 3), "max_concurrency": peak,
                       "members": [m[2] for m in members]})
    return result


def overlaps(since: datetime, until: datetime, task_name: str | None = None,
             now: datetime | None = None) -> dict[str, Any]:
    """Groups of executions (those of ``timeline``) that ran at the same time, with overlap duration."""
    now = _now(now)
    bars, truncated = _bars(since, until, now, task_name)
    return _overlaps(since, until, now, bars, truncated)


def _overlaps(since: datetime, until: datetime, now: datetime, bars: list[dict[str, Any]], truncated: bool,
              rendered: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    intervals = [(bar["start"], bar["end"] or now, index) for index, bar in enumerate(bars)]
    groups = overlap_groups(intervals)
    return {
        "since": _iso(since), "until": _iso(until), "truncated": truncated,
        "groups": [
            {"start": _iso(group["start"]), "end": _iso(group["end"]),
             "duration": round((group["end"] - group["start"]).total_seconds(), 3),
             "overlap_seconds": group["overlap_seconds"], "max_concurrency": group["max_concurrency"],
             "jobs": [rendered[i] if rendered is not None else _render_bar(bars[i]) for i in group["members"]]}
            for group in groups
        ],
    }


# --- stuck jobs -----------------------------------------------------------------------------------------

def severity(seconds: float) -> str:
    """Severity of a job active for ``seconds``: low < 30 min <= medium < 1 h <= high < 2 h <= critical."""
    minutes = seconds / 60
    return next(name for bound, name in SEVERITIES if minutes >= bound)


def stuck_jobs(threshold: float | None = None, now: datetime | None = None) -> QuerySet[JobRun]:
    """Jobs active longer than ``threshold`` seconds (default ``STUCK_AFTER``), longest first."""
    threshold = conf.get("STUCK_AFTER") if threshold is None else threshold
    return (JobRun.objects.stuck(timedelta(seconds=threshold), now=_now(now))
            .order_by(Coalesce("started_at", "received_at").asc(), "id"))


def describe_stuck(job: JobRun, now: datetime | None = None) -> dict[str, Any]:
    """The stuck-job entry for one job: how long it has been active and how severe that is."""
    since = job.started_at or job.received_at
    seconds = _running_seconds(since, _now(now)) or 0.0
    return {"task_id": job.task_id, "task_name": job.task_name, "queue": job.queue, "state": job.state,
            "worker": job.worker, "started_at": _iso(since), "stuck_seconds": round(seconds, 3),
            "severity": severity(seconds), "args": job.args, "kwargs": job.kwargs, "retries": job.retries}


# --- errors ---------------------------------------------------------------------------------------------

def error_groups(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Failures that finished in the range, grouped by exception type and normalised message, most first.

    From the error rollups (``rollups.error_rows``): a constant number of queries and rows per range.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for exception_type, message, task_name, queue, count, first_seen, last_seen, example in rollups.error_rows(
            since, until):
        group = merged.get((exception_type, message))
        if group is None:
            merged[(exception_type, message)] = {
                "exception_type": exception_type, "message": message, "example": example, "count": count,
                "first_seen": first_seen, "last_seen": last_seen, "task_names": {task_name}, "queues": {queue}}
            continue
        group["count"] += count
        group["first_seen"] = min(group["first_seen"], first_seen)
        group["last_seen"] = max(group["last_seen"], last_seen)
        group["example"] = min(group["example"], example)
        group["task_names"].add(task_name)
        group["queues"].add(queue)
    groups = sorted(merged.values(), key=lambda g: (-g["count"], g["exception_type"], g["message"]))
    return [{**g, "first_seen": _iso(g["first_seen"]), "last_seen": _iso(g["last_seen"]),
             "task_names": sorted(g["task_names"]), "queues": sorted(g["queues"])} for g in groups]


def error_group_jobs(since: datetime, until: datetime, exception_type: str, message: str) -> QuerySet[JobRun]:
    """The failures of one error group (as listed by :func:`error_groups`) that finished in the range."""
    failures = rollups.failures_between(since, until).filter(exception_type=exception_type)
    if connections[JobRun.objects.db].vendor == "postgresql":
        return failures.annotate(normalised=rollups.normalised_sql()).filter(normalised=message)
    ids = [pk for pk, text in failures.values_list("id", "exception_message") if normalise_message(text) == message]
    return JobRun.objects.filter(id__in=ids)


# --- jobs -----------------------------------------------------------------------------------------------

def search_jobs(qs: QuerySet[JobRun], term: str) -> QuerySet[JobRun]:
    """Filter ``qs`` to the jobs a free-text ``term`` matches (rules in :mod:`monitoring.search`)."""
    return search.search_jobs(qs, term)


def transitions(job: JobRun) -> list[dict[str, Any]]:
    """The job's state transitions in time order, from the timestamps its record keeps."""
    steps = [(JobState.PENDING, job.published_at), (JobState.RECEIVED, job.received_at),
             (JobState.STARTED, job.started_at)]
    if job.state == JobState.RETRY:
        steps.append((JobState.RETRY, job.updated_at))
    if job.finished_at is not None:
        steps.append((job.state, job.finished_at))
    return [{"state": state, "at": _iso(at)} for state, at in sorted(
        ((s, a) for s, a in steps if a is not None), key=lambda step: step[1])]


def job_detail(task_id: str) -> dict[str, Any]:
    """Everything about one job: its record, transitions, and parent, children and retries (4 queries)."""
    if not storable(task_id):
        raise JobRun.DoesNotExist(f"No job with task id {task_id!r}.")
    job = JobRun.objects.get(task_id=task_id)
    related_ids = [i for i in (job.parent_id, job.retry_of) if i]
    known = set(JobRun.objects.filter(task_id__in=related_ids).values_list("task_id", flat=True))
    children = list(JobRun.objects.filter(parent_id=task_id).exclude(task_id=task_id).order_by("created_at", "id")
                    .values("task_id", "task_name", "state")[:100])
    retries = list(JobRun.objects.filter(retry_of=task_id).order_by("created_at", "id")
                   .values("task_id", "task_name", "state")[:100])
    return {"job": job, "transitions": transitions(job),
            "parent": {"task_id": job.parent_id, "recorded": job.parent_id in known} if job.parent_id else None,
            "retry_of": {"task_id": job.retry_of, "recorded": job.retry_of in known} if job.retry_of else None,
            "children": children, "retries": retries}


# --- health ---------------------------------------------------------------------------------------------

def health(now: datetime | None = None) -> dict[str, Any]:
    """Database, broker and workers, each with a status; ``healthy`` only when all three are ok."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        with connections[JobRun.objects.db].cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"status": "ok"}
    except Exception as exc:
        checks["database"] = {"status": "down", "detail": f"{type(exc).__name__}: {exc}"}
    app = celery_app()
    try:
        with read_connection(app) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = {"status": "ok"}
    except Exception as exc:
        checks["broker"] = {"status": "down", "detail": f"{type(exc).__name__}: {exc}"}
    report = workers.workers(app=app)
    if not report.available:
        checks["workers"] = {"status": "unknown", "detail": report.error or "the broker could not be asked"}
    elif report.online:
        checks["workers"] = {"status": "ok", "online": len(report.online), "names": report.online}
    else:
        checks["workers"] = {"status": "down", "online": 0, "detail": "no worker replied to ping"}
    healthy = all(check["status"] == "ok" for check in checks.values())
    return {"status": "healthy" if healthy else "unhealthy", "timestamp": _iso(_now(now)), "checks": checks}


# --- Prometheus -----------------------------------------------------------------------------------------

OTHER_LABEL = "other"


def prometheus_snapshot(now: datetime | None = None) -> dict[str, Any]:
    """Figures for the Prometheus exposition: all-time outcome counters and runtime histograms per task
    name and queue (from the rollups; at most ``PROMETHEUS_MAX_TASK_NAMES`` task names, the rest folded
    into "other"), queue depths and activity, workers online, stuck jobs."""
    now = _now(now)
    data = rollups.aggregate(None, now)
    per_task: dict[str, int] = defaultdict(int)
    for (_, task_name, _queue), figures in data.items():
        per_task[task_name] += figures.total
    keep = set(sorted(per_task, key=lambda name: (-per_task[name], name))[:conf.get("PROMETHEUS_MAX_TASK_NAMES")])
    series: dict[tuple[str, str], Figures] = defaultdict(Figures)
    for (_, task_name, queue), figures in data.items():
        series[(task_name if task_name in keep else OTHER_LABEL, queue)].add(figures)
    names = sorted(queue_sources())
    depth = queue_depths(names)
    active = dict(JobRun.objects.active().order_by().values_list("queue").annotate(n=Count("id")))
    paused = set(QueueState.objects.filter(paused=True).values_list("name", flat=True))
    report = workers.workers()
    return {
        "jobs": dict(series),
        "queues": [{"queue": name, "depth": depth.depths.get(name) if depth.available else None,
                    "active": active.get(name, 0), "paused": name in paused} for name in names],
        "broker_up": depth.available,
        "workers_online": len(report.online) if report.available else None,
        "stuck": stuck_jobs(now=now).count(),
    }
