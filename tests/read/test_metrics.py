"""Every figure of the read services, checked against a computation of its own on seeded data (fixed clock)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.test import override_settings

from monitoring import metrics, rollups
from monitoring.models import JobRun, JobState, QueueState
from tests.factories import job_run

from .seed import NOW, TASKS, expected_rate, finished_in, seed_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def history():
    rows = seed_history(count=500)
    rollups.rebuild(NOW - timedelta(days=31), NOW - timedelta(minutes=7))
    return rows


# --- metrics ------------------------------------------------------------------------------------------------

@override_settings(MONITORING={"SUCCESS_RATE_SAMPLE": 100})
def test_success_rate_covers_the_most_recently_finished_jobs(history):
    last = sorted((r for r in history if r.finished_at), key=lambda r: r.finished_at)[-100:]
    rate, sample = metrics.success_rate_of_last(100)
    assert sample == 100
    assert rate == expected_rate(last)


def test_processing_rate_is_jobs_per_minute_over_the_window(history):
    window = 6 * 3600
    expected = len(finished_in(history, NOW - timedelta(seconds=window), NOW)) * 60 / window
    assert metrics.processing_rate(now=NOW, window=window) == pytest.approx(expected, abs=1e-3)


def test_metrics_counts_per_queue(history):
    job_run(task_name="app.report", queue="reports", state=JobState.STARTED, created_at=NOW - timedelta(minutes=3))
    job_run(task_name="app.add", queue="default", state=JobState.PENDING, created_at=NOW - timedelta(minutes=1),
            eta=NOW + timedelta(minutes=5))
    QueueState.objects.create(name="reports", paused=True)
    data = metrics.metrics(now=NOW)
    day = finished_in(history, NOW - timedelta(days=1), NOW)
    rows = {row["queue"]: row for row in data["queues"]}
    for queue in set(TASKS.values()):
        in_queue = [r for r in day if r.queue == queue]
        assert rows[queue]["completed"] == sum(r.state == JobState.SUCCESS for r in in_queue)
        assert rows[queue]["failed"] == sum(r.state in (JobState.FAILURE, JobState.LOST) for r in in_queue)
    assert rows["reports"]["active"] == 1 and rows["reports"]["paused"] is True
    assert rows["default"]["delayed"] == 1 and rows["default"]["paused"] is False
    assert data["totals"]["completed"] == sum(r.state == JobState.SUCCESS for r in day)
    assert data["totals"]["active"] == 1
    assert data["broker"]["available"] is True
    assert rows["default"]["waiting"] == 0
    # The dashboard's "waiting" card and workers line come from the queue list: the same figures.
    overview = metrics.queue_overview(now=NOW)
    assert overview["waiting"] == data["totals"]["waiting"]
    assert overview["workers"]["online"] == data["workers"]["online"]


def test_metrics_query_count_does_not_grow_with_rows(django_assert_max_num_queries):
    seed_history(count=50)
    rollups.rebuild(NOW - timedelta(days=31), NOW)
    metrics.metrics(now=NOW)  # warm the broker/worker caches
    with django_assert_max_num_queries(14) as small:
        metrics.metrics(now=NOW)
    seed_history(count=500, seed=8)
    rollups.rebuild(NOW - timedelta(days=31), NOW)
    with django_assert_max_num_queries(len(small.captured_queries)):
        metrics.metrics(now=NOW)


# --- trends and stats -----------------------------------------------------------------------------------

@pytest.mark.parametrize("period", metrics.PERIODS)
def test_trends_per_queue_and_task(history, period):
    data = metrics.trends(period, now=NOW)
    since = NOW - metrics.RANGES[period]
    window = finished_in(history, since, NOW)
    for entry in data["queues"]:
        rows = [r for r in window if r.queue == entry["queue"]]
        assert entry["successful"] == sum(r.state == JobState.SUCCESS for r in rows)
        assert entry["failed"] == sum(r.state in (JobState.FAILURE, JobState.LOST) for r in rows)
        assert entry["total"] == len(rows)
        assert entry["success_rate"] == expected_rate(rows)
        runtimes = [r.runtime for r in rows if r.runtime is not None]
        if runtimes:
            assert entry["avg_processing_time"] == pytest.approx(sum(runtimes) / len(runtimes), abs=1e-3)
        # The series adds up to the totals, one point per step.
        assert sum(point["total"] for point in entry["series"]) == entry["total"]
        step = metrics.PERIOD_STEPS[period]
        assert len(entry["series"]) == len({rollups.floor_time(since, step) + timedelta(seconds=step * i)
                                            for i in range(int(metrics.RANGES[period].total_seconds() // step) + 1)})
    by_task = {entry["task_name"]: entry for entry in data["tasks"]}
    for task in TASKS:
        assert by_task.get(task, {"total": 0})["total"] == sum(r.task_name == task for r in window)
    assert data["totals"]["total"] == len(window)


@pytest.mark.parametrize("period", metrics.PERIODS)
def test_trend_series_of_all_jobs_and_of_one_task(history, period):
    since = NOW - metrics.RANGES[period]
    step = metrics.PERIOD_STEPS[period]
    window = finished_in(history, since, NOW)
    for task in (None, "app.report"):
        series = metrics.trend_series(period, task_name=task, now=NOW)
        rows = [r for r in window if task is None or r.task_name == task]
        expected: dict = {}
        for r in rows:
            start = rollups.floor_time(r.finished_at, step).isoformat()
            ok, bad, total = expected.get(start, (0, 0, 0))
            expected[start] = (ok + (r.state == JobState.SUCCESS),
                               bad + (r.state in (JobState.FAILURE, JobState.LOST)), total + 1)
        got = {p["start"]: (p["successful"], p["failed"], p["total"]) for p in series if p["total"]}
        assert got == expected and expected
        trend_points = metrics.trends(period, now=NOW)["queues"][0]["series"]
        assert [p["start"] for p in series] == [p["start"] for p in trend_points]
    assert metrics.trend_series(period, task_name="app.unknown", now=NOW) == []


def test_stats_per_job_type(history):
    running = job_run(task_name="app.report", queue="reports", state=JobState.STARTED,
                      created_at=NOW - timedelta(minutes=2))
    since = NOW - timedelta(days=7)
    data = metrics.stats(since, NOW, now=NOW)
    window = finished_in(history, since, NOW)
    by_task = {entry["task_name"]: entry for entry in data["job_types"]}
    for task in TASKS:
        rows = [r for r in window if r.task_name == task]
        entry = by_task[task]
        assert entry["total_runs"] == len(rows)
        assert entry["success_rate"] == expected_rate(rows)
        latest = max((r for r in history if r.task_name == task), key=lambda r: r.created_at)
        if task == "app.report":
            assert entry["current_status"] == "running" and entry["running"] == 1
            assert entry["last_run_at"] == running.started_at.isoformat()
        else:
            assert entry["last_state"] == latest.state == entry["current_status"]
            assert entry["last_run_at"] == latest.started_at.isoformat()
    assert data["summary"]["total"] == len(window)
    assert data["summary"]["running"] == 1


# --- timeline and overlaps ------------------------------------------------------------------------------------

def _job(name, start_minute, minutes, state=JobState.SUCCESS):
    start = NOW - timedelta(hours=1) + timedelta(minutes=start_minute)
    return job_run(task_name=name, state=state, created_at=start - timedelta(seconds=0.5),
                   runtime=minutes * 60 if minutes is not None else None)


def test_timeline_bars_and_overlap_groups():
    a = _job("app.a", 0, 10)       # 0-10
    b = _job("app.b", 5, 10)       # 5-15 overlaps a for 5 min
    c = _job("app.c", 12, 1)       # 12-13 overlaps b for 1 min (same group)
    d = _job("app.d", 30, 5)       # alone
    e = _job("app.e", 35, 5)       # touches d's end: no overlap
    running = _job("app.f", 50, None, JobState.STARTED)  # still running until NOW (07:31 past)
    g = _job("app.g", 55, 2, JobState.FAILURE)  # inside the running one
    since = NOW - timedelta(hours=1)
    bars = metrics.timeline(since, NOW, now=NOW)["bars"]
    assert [bar["task_id"] for bar in bars] == [j.task_id for j in (a, b, c, d, e, running, g)]
    assert bars[5]["status"] == "running" and bars[5]["end"] is None
    assert bars[6]["status"] == JobState.FAILURE

    groups = metrics.overlaps(since, NOW, now=NOW)["groups"]
    # Independent check: count, second by second, the moments two or more jobs ran.
    intervals = [(j.started_at, j.finished_at or NOW) for j in (a, b, c, d, e, running, g)]
    expected = []
    second = since
    while second < NOW:
        busy = sum(start <= second < end for start, end in intervals)
        expected.append(busy >= 2)
        second += timedelta(seconds=1)
    assert sum(group["overlap_seconds"] for group in groups) == pytest.approx(sum(expected), abs=2)
    assert [[job["task_name"] for job in group["jobs"]] for group in groups] == [
        ["app.a", "app.b", "app.c"], ["app.f", "app.g"]]
    assert groups[0]["overlap_seconds"] == pytest.approx(6 * 60)
    assert groups[0]["max_concurrency"] == 2
    assert metrics.timeline(since, NOW, task_name="app.b", now=NOW)["bars"][0]["task_id"] == b.task_id


def test_timeline_includes_jobs_started_earlier_that_still_run():
    since = NOW - timedelta(hours=1)
    long_running = job_run(task_name="app.export", state=JobState.STARTED, created_at=since - timedelta(hours=2))
    job_run(task_name="app.export", state=JobState.SUCCESS, created_at=since - timedelta(hours=2), runtime=600)
    inside = _job("app.mail", 10, 5)
    bars = metrics.timeline(since, NOW, now=NOW)["bars"]
    assert [bar["task_id"] for bar in bars] == [long_running.task_id, inside.task_id]  # oldest first
    assert bars[0]["status"] == "running" and bars[0]["end"] is None
    assert bars[0]["duration"] == pytest.approx((NOW - long_running.started_at).total_seconds())
    # It ran through the whole hour, so it overlaps the job inside it.
    groups = metrics.overlaps(since, NOW, now=NOW)["groups"]
    assert [[job["task_id"] for job in group["jobs"]] for group in groups] == [[long_running.task_id,
                                                                                 inside.task_id]]
    assert groups[0]["overlap_seconds"] == pytest.approx(5 * 60)
    assert metrics.timeline(since, NOW, task_name="app.mail", now=NOW)["bars"][0]["task_id"] == inside.task_id


@override_settings(MONITORING={"TIMELINE_MAX_BARS": 3})
def test_timeline_keeps_the_most_recent_bars_and_says_it_truncated():
    jobs = [_job("app.a", minute, 1) for minute in (1, 3, 5, 7)]
    data = metrics.timeline(NOW - timedelta(hours=1), NOW, now=NOW)
    assert data["truncated"] is True
    assert [bar["task_id"] for bar in data["bars"]] == [j.task_id for j in jobs[1:]]


# --- stuck ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes, severity", [(10.5, "low"), (29.9, "low"), (30, "medium"), (59, "medium"),
                                               (60, "high"), (119, "high"), (120, "critical"), (600, "critical")])
def test_stuck_severity_by_minutes_active(minutes, severity):
    assert metrics.severity(minutes * 60) == severity


def test_stuck_jobs_longest_first_with_severity():
    ages = {"low": 15, "medium": 45, "high": 90, "critical": 180, "fresh": 5}
    jobs = {name: job_run(task_name=f"app.{name}", state=JobState.STARTED,
                          created_at=NOW - timedelta(minutes=m, seconds=0.5)) for name, m in ages.items()}
    job_run(task_name="app.done", state=JobState.SUCCESS, created_at=NOW - timedelta(hours=5))
    stuck = [metrics.describe_stuck(job, now=NOW) for job in metrics.stuck_jobs(now=NOW)]
    assert [entry["task_id"] for entry in stuck] == [jobs[n].task_id for n in ("critical", "high", "medium", "low")]
    assert [entry["severity"] for entry in stuck] == ["critical", "high", "medium", "low"]
    assert stuck[0]["stuck_seconds"] == pytest.approx(180 * 60)
    # A custom threshold widens the net.
    assert metrics.stuck_jobs(threshold=60, now=NOW).count() == 5


# --- errors -----------------------------------------------------------------------------------------------

def test_error_groups_mask_ids_and_numbers(history):
    since = NOW - timedelta(days=30)
    groups = metrics.error_groups(since, NOW)
    failures = [r for r in finished_in(history, since, NOW) if r.state == JobState.FAILURE]
    expected = Counter((r.exception_type, metrics.normalise_message(r.exception_message)) for r in failures)
    assert {(g["exception_type"], g["message"]): g["count"] for g in groups} == dict(expected)
    assert [g["count"] for g in groups] == sorted((g["count"] for g in groups), reverse=True)
    timeout = next(g for g in groups if g["exception_type"] == "TimeoutError")
    assert timeout["message"] == "query <n> exceeded <n>s"
    members = [r for r in failures if r.exception_type == "TimeoutError"]
    assert timeout["first_seen"] == min(r.finished_at for r in members).isoformat()
    assert timeout["last_seen"] == max(r.finished_at for r in members).isoformat()
    assert timeout["example"] == min(r.exception_message for r in members)
    assert timeout["task_names"] == sorted({r.task_name for r in members})
    assert timeout["queues"] == sorted({r.queue for r in members})
    assert {g["message"] for g in groups} >= {"<n> mailbox unavailable: <email>", "'<str>'"}


def test_normalise_message():
    assert metrics.normalise_message("Job 0xdeadBEEF for 'acme' failed after 3.5s\nTraceback") == (
        "Job <hex> for '<str>' failed after <n>s")


# --- job detail ------------------------------------------------------------------------------------------

def test_job_detail_transitions_and_links(django_assert_num_queries):
    parent = job_run(task_name="app.parent")
    job = job_run(task_name="app.child", parent_id=parent.task_id, state=JobState.FAILURE,
                  created_at=NOW - timedelta(minutes=5))
    child = job_run(task_name="app.grandchild", parent_id=job.task_id)
    retry = job_run(task_name="app.child", retry_of=job.task_id)
    with django_assert_num_queries(4):
        detail = metrics.job_detail(job.task_id)
    assert [t["state"] for t in detail["transitions"]] == ["PENDING", "RECEIVED", "STARTED", "FAILURE"]
    assert detail["transitions"][-1]["at"] == job.finished_at.isoformat()
    assert detail["parent"] == {"task_id": parent.task_id, "recorded": True}
    assert [c["task_id"] for c in detail["children"]] == [child.task_id]
    assert [r["task_id"] for r in detail["retries"]] == [retry.task_id]
    with pytest.raises(JobRun.DoesNotExist):
        metrics.job_detail("nope")
