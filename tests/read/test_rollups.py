"""Rollups answer any range exactly as a scan of the job records would, in a constant number of queries."""

from __future__ import annotations

import itertools
import statistics
from datetime import timedelta

import pytest
from django.test import override_settings

from monitoring import rollups
from monitoring.models import HISTOGRAM_BOUNDS, ErrorRollup, JobRollup, JobState, RollupState
from tests.factories import job_run

from .seed import NOW, expected_rate, finished_in, seed_history

pytestmark = pytest.mark.django_db


def totals(data: dict) -> rollups.Figures:
    out = rollups.Figures()
    for figures in data.values():
        out.add(figures)
    return out


RANGES = [
    (NOW - timedelta(days=30), NOW),
    (NOW - timedelta(days=7, minutes=13), NOW - timedelta(hours=5, minutes=2, seconds=7)),
    (NOW - timedelta(hours=1), NOW),
    (NOW - timedelta(minutes=3), NOW),
    (None, NOW),
]


@pytest.mark.sqlite  # the sums are hand-written SQL: the embedded SQLite default must agree too
@pytest.mark.parametrize("since, until", RANGES)
def test_aggregate_over_rollups_equals_a_scan_of_the_records(since, until, django_assert_max_num_queries):
    rows = seed_history()
    rollups.rebuild(NOW - timedelta(days=31), NOW - timedelta(minutes=20))
    with django_assert_max_num_queries(3):
        got = totals(rollups.aggregate(since, until))
    expected = finished_in(rows, since, until)
    assert got.succeeded == sum(r.state == JobState.SUCCESS for r in expected)
    assert got.failed == sum(r.state == JobState.FAILURE for r in expected)
    assert got.revoked == sum(r.state == JobState.REVOKED for r in expected)
    assert got.lost == sum(r.state == JobState.LOST for r in expected)
    runtimes = [r.runtime for r in expected if r.runtime is not None]
    assert got.runtime_count == len(runtimes)
    assert got.runtime_sum == pytest.approx(sum(runtimes))
    assert got.success_rate == expected_rate(expected)


@pytest.mark.sqlite
@pytest.mark.parametrize("since, until", RANGES)
def test_error_rows_over_rollups_equal_a_scan_of_the_records(since, until, django_assert_max_num_queries):
    rows = seed_history()
    rollups.rebuild(NOW - timedelta(days=31), NOW - timedelta(minutes=20))
    with django_assert_max_num_queries(3):
        got_rows = rollups.error_rows(since, until)
    got: dict = {}
    for *key, count, first, last, example in got_rows:  # a group may come from rollups and from an edge
        old = got.get(tuple(key), (0, first, last, example))
        got[tuple(key)] = (old[0] + count, min(old[1], first), max(old[2], last), min(old[3], example))
    expected: dict = {}
    for r in finished_in(rows, since, until):
        if r.state != JobState.FAILURE:
            continue
        key = (r.exception_type, rollups.normalise_message(r.exception_message), r.task_name, r.queue)
        old = expected.get(key, (0, r.finished_at, r.finished_at, r.exception_message))
        expected[key] = (old[0] + 1, min(old[1], r.finished_at), max(old[2], r.finished_at),
                         min(old[3], r.exception_message))
    assert got == expected
    assert expected or until - since <= timedelta(hours=1)  # the short ranges may hold no failure


def test_error_rollups_follow_late_failures_and_pruning():
    seed_history(count=100, days=2)
    rollups.roll_up(now=NOW)
    late = job_run(task_name="app.add", queue="default", state=JobState.FAILURE, exception_type="KeyError",
                   exception_message="'abc'", created_at=NOW - timedelta(hours=2, minutes=1),
                   updated_at=NOW + timedelta(minutes=1))
    rollups.roll_up(now=NOW + timedelta(minutes=2))
    assert ("KeyError", "'<str>'", "app.add", "default") in {
        row[:4] for row in rollups.error_rows(late.finished_at, late.finished_at + timedelta(seconds=1))}
    with override_settings(MONITORING={"ROLLUP_RETENTION_DAYS": 1}):
        rollups.prune(now=NOW)
    assert not ErrorRollup.objects.filter(bucket__lt=NOW - timedelta(days=1, hours=1)).exists()


def test_percentiles_fall_in_the_histogram_bucket_of_the_true_percentile():
    rows = seed_history(count=800)
    rollups.rebuild(NOW - timedelta(days=31), NOW)
    figures = totals(rollups.aggregate(NOW - timedelta(days=30), NOW))
    runtimes = sorted(r.runtime for r in finished_in(rows, NOW - timedelta(days=30), NOW) if r.runtime is not None)
    for q in (0.5, 0.95):
        true = statistics.quantiles(runtimes, n=100, method="inclusive")[int(q * 100) - 1]
        index = next(i for i, bound in enumerate(HISTOGRAM_BOUNDS) if true <= bound)
        lower = HISTOGRAM_BOUNDS[index - 1] if index else 0.0
        assert lower <= figures.percentile(q) <= HISTOGRAM_BOUNDS[index]


def test_percentile_interpolates_inside_a_bucket():
    # Four runtimes in (1, 2.5]: the median is half-way through that bucket's counts.
    histogram = [0] * (len(HISTOGRAM_BOUNDS) + 1)
    histogram[HISTOGRAM_BOUNDS.index(2.5)] = 4
    assert rollups.histogram_quantile(histogram, 0.5) == pytest.approx(1.0 + 1.5 * 0.5)
    assert rollups.histogram_quantile([0] * len(histogram), 0.5) is None


def test_hourly_rows_equal_the_sum_of_their_five_minute_rows():
    seed_history(count=300, days=2)
    rollups.rebuild(NOW - timedelta(days=3), NOW)
    hourly = {(r.bucket, r.task_name, r.queue): r.succeeded + r.failed
              for r in JobRollup.objects.filter(granularity=rollups.HOUR)}
    five = {}
    for r in JobRollup.objects.filter(granularity=rollups.FIVE_MINUTES):
        key = (rollups.floor_time(r.bucket, rollups.HOUR), r.task_name, r.queue)
        five[key] = five.get(key, 0) + r.succeeded + r.failed
    assert hourly == five and hourly


def test_roll_up_is_incremental_idempotent_and_picks_up_late_writes():
    rows = seed_history(count=200, days=1)
    first = rollups.roll_up(now=NOW)
    state = RollupState.objects.get()
    assert state.complete_until == rollups.floor_time(NOW - timedelta(seconds=30), 300)
    snapshot = sorted(JobRollup.objects.values_list("granularity", "bucket", "task_name", "queue", "succeeded"))
    rollups.roll_up(now=NOW)  # nothing new: same rows
    assert sorted(JobRollup.objects.values_list("granularity", "bucket", "task_name", "queue",
                                                "succeeded")) == snapshot
    assert first["rows"] > 0

    # A job that finished two hours ago but was written only now (a worker's buffer was held up).
    late_finish = NOW - timedelta(hours=2, minutes=1)
    job_run(task_name="app.add", queue="default", state=JobState.SUCCESS, created_at=late_finish - timedelta(
        seconds=2), runtime=1.5, updated_at=NOW + timedelta(minutes=1))
    rollups.roll_up(now=NOW + timedelta(minutes=2))
    got = totals(rollups.aggregate(NOW - timedelta(hours=3), NOW - timedelta(hours=1)))
    expected = finished_in(rows, NOW - timedelta(hours=3), NOW - timedelta(hours=1))
    assert got.succeeded == sum(r.state == JobState.SUCCESS for r in expected) + 1


def test_ranges_outside_the_rollups_read_the_records():
    rows = seed_history(count=100, days=2)
    # Rollups cover only yesterday's middle; everything else must come from JobRun.
    rollups.rebuild(NOW - timedelta(hours=30), NOW - timedelta(hours=20))
    got = totals(rollups.aggregate(NOW - timedelta(days=2), NOW))
    assert got.total == len(finished_in(rows, NOW - timedelta(days=2), NOW))


def test_plan_uses_hours_in_the_middle_and_five_minutes_at_the_edges():
    state = RollupState(covered_from=NOW - timedelta(days=40), complete_until=rollups.floor_time(NOW, 300))
    segments = rollups.plan(NOW - timedelta(days=1), NOW, state)
    kinds = [(kind, granularity) for kind, granularity, _, _ in segments]
    assert kinds == [("raw", None), ("rollup", 300), ("rollup", 3600), ("rollup", 300), ("raw", None)]
    # Contiguous and covering exactly the range.
    assert segments[0][2] == NOW - timedelta(days=1) and segments[-1][3] == NOW
    assert all(a[3] == b[2] for a, b in itertools.pairwise(segments))


def test_plan_takes_whole_days_from_daily_rows_when_the_step_allows():
    state = RollupState(covered_from=NOW - timedelta(days=40), complete_until=rollups.floor_time(NOW, 300))
    since = NOW - timedelta(days=30)
    segments = rollups.plan(since, NOW, state)
    kinds = [(kind, granularity) for kind, granularity, _, _ in segments]
    assert kinds == [("raw", None), ("rollup", 300), ("rollup", 3600), ("rollup", 86400), ("rollup", 3600),
                     ("rollup", 300), ("raw", None)]
    day = segments[3]
    assert day[2] == rollups.ceil_time(since, 86400) and day[3] == rollups.floor_time(NOW, 86400)
    assert segments[0][2] == since and segments[-1][3] == NOW
    assert all(a[3] == b[2] for a, b in itertools.pairwise(segments))
    # Hourly points cannot come from a day's row.
    hourly = rollups.plan(since, NOW, state, step=rollups.HOUR)
    assert {granularity for _, granularity, _, _ in hourly} == {None, 300, 3600}
    assert hourly[0][2] == since and hourly[-1][3] == NOW


def test_a_day_is_the_sum_of_its_hours():
    seed_history(count=400, days=4)
    rollups.rebuild(NOW - timedelta(days=5), NOW)
    hours: dict = {}
    for r in JobRollup.objects.filter(granularity=rollups.HOUR):
        key = (rollups.floor_time(r.bucket, rollups.DAY), r.task_name, r.queue)
        hours[key] = hours.get(key, 0) + r.succeeded + r.failed + r.revoked + r.lost
    days = {(r.bucket, r.task_name, r.queue): r.succeeded + r.failed + r.revoked + r.lost
            for r in JobRollup.objects.filter(granularity=rollups.DAY)}
    assert days == hours and sum(days.values()) > 0


@pytest.mark.sqlite
@pytest.mark.parametrize("step", [rollups.HOUR, rollups.DAY])
def test_stepped_aggregate_over_a_month_equals_a_scan_per_bucket(step, django_assert_max_num_queries):
    rows = seed_history()
    rollups.rebuild(NOW - timedelta(days=31), NOW - timedelta(minutes=20))
    since = NOW - timedelta(days=30)
    with django_assert_max_num_queries(3):
        data = rollups.aggregate(since, NOW, step=step)
    got: dict = {}
    for (start, _task, _queue), figures in data.items():
        got[start] = got.get(start, 0) + figures.total
    expected: dict = {}
    for r in finished_in(rows, since, NOW):
        start = rollups.floor_time(r.finished_at, step)
        expected[start] = expected.get(start, 0) + 1
    assert {k: v for k, v in got.items() if v} == expected


def test_migration_backfills_daily_rows_from_hourly_rows():
    from importlib import import_module

    from django.apps import apps

    migration = import_module("monitoring.migrations.0005_read_perf")
    seed_history(count=200, days=3)
    rollups.rebuild(NOW - timedelta(days=4), NOW)
    before = sorted(JobRollup.objects.filter(granularity=rollups.DAY).values_list(
        "bucket", "task_name", "queue", "succeeded", "failed", "runtime_count", "h05"))
    JobRollup.objects.filter(granularity=rollups.DAY).delete()
    migration.backfill_days(apps, None)
    after = sorted(JobRollup.objects.filter(granularity=rollups.DAY).values_list(
        "bucket", "task_name", "queue", "succeeded", "failed", "runtime_count", "h05"))
    assert after == before and before


def test_migration_backfills_error_rollups_for_the_covered_span():
    from importlib import import_module

    from django.apps import apps

    migration = import_module("monitoring.migrations.0007_error_rollups")
    seed_history(count=300, days=3)
    rollups.rebuild(NOW - timedelta(days=4), NOW)
    columns = ("granularity", "bucket", "exception_type", "message", "task_name", "queue", "count", "first_seen",
               "last_seen", "example")
    before = sorted(ErrorRollup.objects.values_list(*columns))
    ErrorRollup.objects.all().delete()
    migration.backfill(apps, None)
    assert sorted(ErrorRollup.objects.values_list(*columns)) == before and before
