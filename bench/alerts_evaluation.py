"""Benchmark alert evaluation on a large job table (PostgreSQL): one ``alerts.evaluate()`` run over the default
rules plus long-window rules, against a baseline that computes the same figures straight from ``JobRun``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jm_alerts_bench python bench/alerts_evaluation.py --rows 2000000

Target: evaluation stays cheap (well under a second, a bounded number of queries) whatever the table size,
because job metrics read the rollups and stuck jobs read the partial active-jobs index.
``--keep`` reuses the rows of a previous run (seeding and rolling up dominate the run time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobmonitor.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from monitoring import alerts, rollups  # noqa: E402
from monitoring.models import Alert, AlertRule, JobRun  # noqa: E402

LONG_RULES = [
    {"name": "bench error rate 24h", "metric": "error_rate", "threshold": 10, "window": 86_400},
    {"name": "bench p95 7d", "metric": "p95_processing_time", "threshold": 60, "window": 7 * 86_400},
    {"name": "bench success rate 30d on a queue", "metric": "success_rate", "threshold": 90,
     "window": 30 * 86_400, "scope": "queue", "scope_value": "emails"},
]


def seed(rows: int, days: int) -> None:
    """Insert finished jobs spread over ``days`` (5% failures) and 200 active ones, with generate_series."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitoring_jobrun, monitoring_jobrollup, monitoring_rollupstate, "
                       "monitoring_alert, monitoring_alertdelivery RESTART IDENTITY CASCADE")
        cursor.execute(
            """
            INSERT INTO monitoring_jobrun (task_id, task_name, origin, queue, routing_key, state,
                arguments_truncated, result, exception_type, exception_message, traceback, worker, retries,
                parent_id, root_id, group_id, retry_of, created_at, updated_at, started_at, finished_at, runtime)
            SELECT 'bench-' || g, (ARRAY['app.mail','app.report','app.resize','app.add'])[1 + g %% 4], 'celery',
                (ARRAY['emails','reports','media','default'])[1 + g %% 4], '',
                CASE WHEN g %% 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END, false, '',
                CASE WHEN g %% 20 = 0 THEN 'ValueError' ELSE '' END, '', '', 'celery@bench', 0, '', '', '', '',
                t, t, t, t + make_interval(secs => (g %% 97) / 10.0), (g %% 97) / 10.0
            FROM (SELECT g, now() - make_interval(secs => (g::float8 / %s) * %s * 86400) AS t
                  FROM generate_series(1, %s) g) s
            """, [rows, days, rows])
        cursor.execute(
            """
            INSERT INTO monitoring_jobrun (task_id, task_name, origin, queue, routing_key, state,
                arguments_truncated, result, exception_type, exception_message, traceback, worker, retries,
                parent_id, root_id, group_id, retry_of, created_at, updated_at, started_at)
            SELECT 'active-' || g, 'app.report', 'celery', 'reports', '', 'STARTED', false, '', '', '', '',
                'celery@bench', 0, '', '', '', '', now() - make_interval(mins => g), now(),
                now() - make_interval(mins => g)
            FROM generate_series(1, 200) g
            """)
        cursor.execute("ANALYZE monitoring_jobrun")


def timed(func, repeat: int = 5) -> tuple[float, int]:
    """Median seconds of ``repeat`` runs and the queries of one run."""
    times, queries = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            func()
            times.append(time.perf_counter() - start)
        queries = len(captured)
    return statistics.median(times), queries


def baseline(rules: list[AlertRule], now) -> None:
    """The same job figures without rollups: one aggregate over the window's JobRun rows per rule."""
    for rule in rules:
        if rule.metric == "stuck_jobs":
            JobRun.objects.stuck(timedelta(seconds=rule.threshold), now=now).count()
            continue
        if rule.metric not in ("error_rate", "success_rate", "avg_processing_time", "p95_processing_time",
                               "throughput"):
            continue
        qs = rollups._finished_between(now - timedelta(seconds=rule.window), now)
        if rule.scope == "queue":
            qs = qs.filter(queue=rule.scope_value)
        qs.aggregate(**rollups._jobrun_sums())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="reuse the rows of a previous run")
    options = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    now = timezone.now()
    if not options.keep:
        start = time.perf_counter()
        seed(options.rows, options.days)
        print(f"seeded {options.rows:,} finished + 200 active jobs in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        rollups.rebuild(now - timedelta(days=options.days + 1), now)
        print(f"rolled up in {time.perf_counter() - start:.1f} s")
    AlertRule.objects.filter(name__startswith="bench ").delete()
    for rule in LONG_RULES:
        AlertRule.objects.create(**{"scope": "all", "severity": "medium", "cooldown": 0, **rule})
    rules = list(AlertRule.objects.filter(enabled=True))
    total = JobRun.objects.count()

    base_s, base_q = timed(lambda: baseline(rules, now), repeat=3)
    eval_s, eval_q = timed(lambda: alerts.evaluate(now=now))
    print(f"\n{total:,} job rows, {len(rules)} enabled rules ({Alert.objects.filter(state='firing').count()} firing)")
    print("| measurement | seconds | queries | x baseline |")
    print("|---|---:|---:|---:|")
    print(f"| job figures straight from JobRun, per rule (baseline) | {base_s:.3f} | {base_q} | 1.0 |")
    print(f"| alerts.evaluate() (rollups + active index) | {eval_s:.3f} | {eval_q} | {base_s / eval_s:.1f} |")


if __name__ == "__main__":
    main()
