"""Benchmark the admin pages on a big job table: both dashboards and the JobRun changelist, against the
django-celery-results ``TaskResult`` changelist on the same number of rows (the baseline, same run).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jm_admin_bench CELERY_BROKER_URL=redis://127.0.0.1:6379/9 \\
        python bench/admin_pages.py --rows 10000000

Targets: each dashboard's server time p50 <= 300 ms; a JobRun changelist page (unfiltered, one filter)
<= 100 ms. Rows are seeded with ``generate_series`` (indexes dropped during the load and rebuilt after) and
kept between runs: a second run with the same ``--rows`` only measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobmonitor.settings")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from batches import demo as batches_demo  # noqa: E402
from batches.models import BatchJob  # noqa: E402
from monitoring import rollups  # noqa: E402

DAYS = 30
TASKS = 20
QUEUES = ("default", "emails", "reports", "media", "other")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def count_estimate(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        return int(cursor.fetchone()[0])


def _without_indexes(table: str, load: str, params: list) -> None:
    """Run ``load`` with the table's secondary indexes and unique constraints dropped, then rebuild them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = %s::regclass AND contype = 'u'", [table])
        constraints = cursor.fetchall()
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u'))",
                       [table, table])
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        try:
            cursor.execute(load, params)
        finally:  # a failed load must not leave the table without its indexes
            cursor.execute("SET maintenance_work_mem = '1GB'")
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
            for _, definition in indexes:
                cursor.execute(definition)
        cursor.execute(f'VACUUM ANALYZE "{table}"')


def seed_jobruns(rows: int) -> None:
    """``rows`` job runs over 30 days: 20 task names, 5 queues, 85 % succeeded, 10 % failed, 5 % other."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitoring_jobrun, monitoring_jobrollup, monitoring_rollupstate RESTART IDENTITY")
    load = f"""
        INSERT INTO monitoring_jobrun (task_id, task_name, origin, queue, routing_key, state, args, kwargs,
            arguments_truncated, result, exception_type, exception_message, traceback, worker, retries, priority,
            parent_id, root_id, group_id, retry_of, created_at, published_at, received_at, started_at,
            finished_at, updated_at, wait_time, runtime)
        SELECT md5(g::text), 'app.tasks.job_' || (g %% {TASKS}), 'celery', q.name, q.name, s.state,
            jsonb_build_array(g), '{{}}'::jsonb, false, '', s.exc, CASE WHEN s.exc = '' THEN '' ELSE
            'Timeout after ' || (g %% 60) || 's talking to host-' || (g %% 7) END, '', 'celery@bench-' || (g %% 4), 0,
            NULL, '', '', '', '', t.created, t.created, t.created, t.started,
            CASE WHEN s.state IN ('SUCCESS', 'FAILURE', 'REVOKED', 'LOST') THEN t.started + t.runtime END,
            t.started + t.runtime, 0.2, CASE WHEN s.state IN ('SUCCESS', 'FAILURE') THEN extract(epoch FROM t.runtime)
            END
        FROM generate_series(1, %s) g
        CROSS JOIN LATERAL (SELECT now() - make_interval(secs => ({DAYS} * 86400.0) * (%s - g) / %s) AS created,
                                   make_interval(secs => 0.05 + (g %% 97) / 10.0) AS runtime) t0
        CROSS JOIN LATERAL (SELECT t0.created, t0.created + interval '200 ms' AS started, t0.runtime) t
        CROSS JOIN LATERAL (SELECT (ARRAY{list(QUEUES)})[1 + g %% {len(QUEUES)}] AS name) q
        CROSS JOIN LATERAL (SELECT CASE WHEN g > %s - 20 THEN 'STARTED'
                                        WHEN g %% 20 < 17 THEN 'SUCCESS' WHEN g %% 20 < 19 THEN 'FAILURE'
                                        WHEN g %% 40 = 19 THEN 'REVOKED' ELSE 'LOST' END AS state) s0
        CROSS JOIN LATERAL (SELECT s0.state, CASE WHEN s0.state = 'FAILURE' THEN 'TimeoutError' ELSE '' END AS exc) s
    """
    _without_indexes("monitoring_jobrun", load, [rows, rows, rows, rows])


def seed_taskresults(rows: int) -> None:
    """The same number of django-celery-results rows, shaped like what its result backend writes."""
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE django_celery_results_taskresult RESTART IDENTITY")
    load = f"""
        INSERT INTO django_celery_results_taskresult (task_id, status, content_type, content_encoding, result,
            date_done, traceback, meta, task_args, task_kwargs, task_name, worker, date_created, periodic_task_name,
            date_started)
        SELECT md5(g::text), CASE WHEN g %% 20 < 17 THEN 'SUCCESS' ELSE 'FAILURE' END, 'application/json', 'utf-8',
            '"done"', now() - make_interval(secs => ({DAYS} * 86400.0) * (%s - g) / %s), NULL, '{{}}',
            '[' || g || ']', '{{}}', 'app.tasks.job_' || (g %% {TASKS}), 'celery@bench-' || (g %% 4),
            now() - make_interval(secs => ({DAYS} * 86400.0) * (%s - g) / %s), NULL,
            now() - make_interval(secs => ({DAYS} * 86400.0) * (%s - g) / %s)
        FROM generate_series(1, %s) g
    """
    _without_indexes("django_celery_results_taskresult", load, [rows, rows, rows, rows, rows, rows, rows])


def measure(client: Client, url: str, runs: int) -> tuple[float, float]:
    """Server time of ``url`` in ms: p50 and max of ``runs`` requests after one warm-up."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        if response.streaming:
            b"".join(response.streaming_content)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="job runs (and TaskResult rows) to seed")
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the row count matches")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("Run against PostgreSQL: set DATABASE_URL=postgres://... (a database of its own).")

    call_command("migrate", verbosity=0)
    if args.reseed or abs(count_estimate("monitoring_jobrun") - args.rows) > args.rows * 0.02:
        started = time.perf_counter()
        log(f"seeding {args.rows:,} job runs")
        seed_jobruns(args.rows)
        log(f"job runs seeded in {time.perf_counter() - started:.0f} s; building rollups")
        now = timezone.now()
        rollups.rebuild(now - timezone.timedelta(days=DAYS + 1), now)
        log(f"rollups built; seeding {args.rows:,} TaskResult rows")
        seed_taskresults(args.rows)
        log(f"seeded in {time.perf_counter() - started:.0f} s")
    if not BatchJob.objects.exists():
        batches_demo.seed(timezone.now(), days=DAYS)

    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    pages = [
        ("Jobs dashboard (24h)", "/admin/monitoring/jobrun/dashboard/", 300),
        ("Jobs dashboard (7d)", "/admin/monitoring/jobrun/dashboard/?range=7d", 300),
        ("AI batches dashboard (24h)", "/admin/batches/batchjob/dashboard/", 300),
        ("JobRun changelist, unfiltered", "/admin/monitoring/jobrun/", 100),
        ("JobRun changelist, state=FAILURE", "/admin/monitoring/jobrun/?state__exact=FAILURE", 100),
        ("JobRun changelist, task name", "/admin/monitoring/jobrun/?task_name=app.tasks.job_7", 100),
        ("JobRun changelist, search by prefix", "/admin/monitoring/jobrun/?q=app.tasks.job_1", 100),
    ]
    baseline_url = "/admin/django_celery_results/taskresult/"
    log(f"measuring ({args.runs} runs per page after a warm-up)")
    baseline, baseline_max = measure(client, baseline_url, max(3, args.runs // 2))
    rows = [(name, *measure(client, url, args.runs), target) for name, url, target in pages]
    print()
    print(f"Admin pages, {count_estimate('monitoring_jobrun'):,} job runs and "
          f"{count_estimate('django_celery_results_taskresult'):,} TaskResult rows (PostgreSQL)")
    print(f"{'page':40} {'p50 ms':>9} {'max ms':>9} {'target':>8} {'ok':>4} {'vs TaskResult':>14}")
    for name, p50, worst, target in rows:
        print(f"{name:40} {p50:9.1f} {worst:9.1f} {target:8d} {'yes' if p50 <= target else 'NO':>4} "
              f"{baseline / p50:13.1f}x")
    print(f"{'TaskResult changelist (baseline)':40} {baseline:9.1f} {baseline_max:9.1f} {'':>8} {'':>4} "
          f"{1.0:13.1f}x")


if __name__ == "__main__":
    main()
