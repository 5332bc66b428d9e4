"""Benchmark the read API on PostgreSQL against plain ORM aggregates over django-celery-results' TaskResult.

    python bench/read_api.py --rows 10000000          # seeds jm_bench (a separate database), then measures
    python bench/read_api.py --rows 1000000 --skip-seed
    python bench/read_api.py --skip-seed --rebuild-rollups   # after a change to the rollups' layout

Seeds ``--rows`` JobRuns over 30 days with generate_series (indexes dropped during the load and rebuilt
after), builds the rollups with ``rollups.rebuild``, seeds the same number of TaskResults, then times each
endpoint through the Django test client (p50 of ``--runs``), counts its SQL queries, and prints a table
with the ratio against the TaskResult ORM aggregate for the same figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = ["app.send_email", "app.generate_report", "app.resize_image", "app.sync_crm", "app.charge_card",
         "app.rebuild_index", "app.export_csv", "app.notify"]
# One row in 1,000 has this address in its arguments (the seed cycles user0..user999).
SEARCH_TERM = "user77@example.com"
QUEUES = ["emails", "reports", "media", "default", "billing", "default", "reports", "emails"]


def setup(database: str) -> None:
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{database}"')
    admin.close()
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13")
    os.environ["DJANGO_SETTINGS_MODULE"] = "jobmonitor.settings"
    os.environ["MONITORING_LOG_LEVEL"] = "ERROR"
    os.environ["DJANGO_DEBUG"] = "0"  # DEBUG would keep every query in memory
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver,localhost"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _secondary_indexes(cursor, table: str) -> list[tuple[str, str]]:
    """Name and definition of every non-unique index of ``table`` (migrations' ones included)."""
    cursor.execute("""
        SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = %s::regclass AND NOT i.indisunique ORDER BY c.relname
    """, [table])
    return cursor.fetchall()


def _build_indexes(cursor, indexes: list[tuple[str, str]], label: str) -> None:
    started = time.monotonic()
    for _name, definition in indexes:
        cursor.execute(definition)
    print(f"  {len(indexes)} {label} indexes rebuilt in {time.monotonic() - started:.0f}s", flush=True)


def seed(rows: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from monitoring import rollups

    now = timezone.now()
    tasks = "(ARRAY[" + ",".join(f"'{t}'" for t in TASKS) + "])"
    queues = "(ARRAY[" + ",".join(f"'{q}'" for q in QUEUES) + "])"
    step = 30 * 86_400 / rows
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitoring_jobrun, monitoring_jobrollup, monitoring_rollupstate, "
                       "django_celery_results_taskresult RESTART IDENTITY")
        # Loading without the secondary indexes (the search trigram index too) and building them afterwards
        # is several times faster; nothing here needs to survive a crash, so commits need not wait for WAL.
        jobrun_indexes = _secondary_indexes(cursor, "monitoring_jobrun")
        result_indexes = _secondary_indexes(cursor, "django_celery_results_taskresult")
        for name, _definition in jobrun_indexes + result_indexes:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        started = time.monotonic()
        # One row per step back from now; 85% succeed, 10% fail, 2% revoked, 1% lost, the newest 50 run.
        cursor.execute(f"""
            INSERT INTO monitoring_jobrun (task_id, task_name, origin, queue, routing_key, state, args, kwargs,
                arguments_truncated, result, exception_type, exception_message, traceback, worker, retries,
                parent_id, root_id, group_id, retry_of, created_at, published_at, received_at, started_at,
                finished_at, updated_at, wait_time, runtime)
            SELECT md5(i::text)::uuid::text, {tasks}[1 + i %% 8], 'celery', {queues}[1 + i %% 8], '', s.state,
                jsonb_build_array(i, 'user' || (i %% 1000) || '@example.com'), '{{}}'::jsonb, false, '',
                CASE WHEN s.state = 'FAILURE' THEN (ARRAY['TimeoutError','DeliveryError','KeyError'])[1 + i %% 3]
                     ELSE '' END,
                CASE WHEN s.state = 'FAILURE' THEN 'query ' || (i %% 997) || ' exceeded 30s' ELSE '' END,
                '', 'celery@worker' || (i %% 4), 0, '', '', '', '',
                s.created, s.created, s.created + interval '50 ms', s.created + interval '100 ms',
                CASE WHEN s.state = 'STARTED' THEN NULL
                     ELSE s.created + interval '100 ms' + s.runtime * interval '1 s' END,
                s.created + interval '100 ms' + s.runtime * interval '1 s', 0.1,
                CASE WHEN s.state IN ('SUCCESS', 'FAILURE') THEN s.runtime END
            FROM (
                SELECT i, %s::timestamptz - (i * %s) * interval '1 s' - interval '10 s' AS created,
                       round((exp(random() * 6) / 20)::numeric, 3)::float AS runtime,
                       CASE WHEN i <= 50 THEN 'STARTED'
                            WHEN i %% 100 < 85 THEN 'SUCCESS' WHEN i %% 100 < 95 THEN 'FAILURE'
                            WHEN i %% 100 < 97 THEN 'REVOKED' WHEN i %% 100 < 98 THEN 'LOST' ELSE 'SUCCESS' END AS state
                FROM generate_series(1, %s) AS i
            ) AS s
        """, [now, step, rows])
        print(f"  JobRun rows inserted in {time.monotonic() - started:.0f}s", flush=True)
        _build_indexes(cursor, jobrun_indexes, "JobRun")
        started = time.monotonic()
        cursor.execute("""
            INSERT INTO django_celery_results_taskresult (task_id, status, content_type, content_encoding,
                result, date_done, traceback, meta, task_args, task_kwargs, task_name, worker, date_created,
                periodic_task_name, date_started)
            SELECT task_id, CASE WHEN state = 'LOST' THEN 'FAILURE' ELSE state END, 'application/json', 'utf-8',
                   'null', COALESCE(finished_at, updated_at), '', '{}', args::text, kwargs::text, task_name, worker,
                   created_at, NULL, started_at
            FROM monitoring_jobrun
        """)
        print(f"  TaskResult rows copied in {time.monotonic() - started:.0f}s", flush=True)
        _build_indexes(cursor, result_indexes, "TaskResult")
        started = time.monotonic()
        cursor.execute("VACUUM ANALYZE monitoring_jobrun")
        cursor.execute("VACUUM ANALYZE django_celery_results_taskresult")
        print(f"  vacuum analyze in {time.monotonic() - started:.0f}s", flush=True)
    started = time.monotonic()
    rollups.rebuild(now - timedelta(days=31), now)
    print(f"  rollups rebuilt in {time.monotonic() - started:.0f}s", flush=True)


def p50(fn, runs: int) -> tuple[float, int]:
    from django.db import connection

    fn()  # warm caches (broker depth, worker replies, plans)
    times = []
    queries: list[str] = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        fn()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(queries)


def baselines() -> dict[str, object]:
    """The same figures as plain ORM aggregates over TaskResult, as a project without rollups writes them."""
    from django.db.models import Avg, Count, F, Max, Q
    from django.utils import timezone
    from django_celery_results.models import TaskResult

    def per_task(days: int):
        since = timezone.now() - timedelta(days=days)
        return list(TaskResult.objects.filter(date_done__gte=since).values("task_name").annotate(
            total=Count("id"), successful=Count("id", filter=Q(status="SUCCESS")),
            failed=Count("id", filter=Q(status="FAILURE")), average=Avg(F("date_done") - F("date_started")),
            last=Max("date_done")))

    def metrics():
        now = timezone.now()
        counts = list(TaskResult.objects.values("status").annotate(n=Count("id")))
        recent = TaskResult.objects.order_by("-date_done").values("id")[:1000]
        rate = list(TaskResult.objects.filter(id__in=recent).values("status").annotate(n=Count("id")))
        per_minute = TaskResult.objects.filter(date_done__gte=now - timedelta(minutes=5)).count()
        return counts, rate, per_minute

    def jobs_page(*conditions, **filters):
        def run():
            qs = TaskResult.objects.filter(*conditions, **filters).order_by("-date_done")
            return list(qs[:50]), qs.count()
        return run

    term = SEARCH_TERM
    search = (Q(task_id=term) | Q(task_name__icontains=term) | Q(task_args__icontains=term)
              | Q(task_kwargs__icontains=term) | Q(result__icontains=term) | Q(traceback__icontains=term))

    return {
        "metrics/": metrics,
        "trends/?period=30d": lambda: per_task(30),
        "stats/?range=30d": lambda: per_task(30),
        "jobs/?state=FAILURE": jobs_page(status="FAILURE"),
        "jobs/?task_name=app.notify": jobs_page(task_name="app.notify"),
        "jobs/?range=24h": jobs_page(date_done__gte=timezone.now() - timedelta(hours=24)),
        f"jobs/?search={SEARCH_TERM}": jobs_page(search),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="JobRun (and TaskResult) rows to seed")
    parser.add_argument("--database", default="jm_bench", help="PostgreSQL database to seed (created if missing)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per endpoint (p50 reported)")
    parser.add_argument("--skip-seed", action="store_true", help="reuse the rows already in the database")
    parser.add_argument("--rebuild-rollups", action="store_true", help="rebuild the rollups of the seeded 31 days")
    args = parser.parse_args()
    if args.rows < 1_000:
        parser.error("--rows must be at least 1000")

    setup(args.database)
    if not args.skip_seed:
        print(f"Seeding {args.rows:,} rows into {args.database} ...", flush=True)
        seed(args.rows)
    elif args.rebuild_rollups:
        from django.utils import timezone

        from monitoring import rollups

        started = time.monotonic()
        rollups.rebuild(timezone.now() - timedelta(days=31), timezone.now())
        print(f"  rollups rebuilt in {time.monotonic() - started:.0f}s", flush=True)

    from django.contrib.auth.models import User
    from django.test import Client

    from monitoring.models import JobRun

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", "", "bench")
    client = Client()
    client.force_login(user)
    from monitoring import rollups

    # What the periodic roll-up task does in production: without it, the minutes since seeding would be
    # read from JobRun at the range's edge and grow with every re-run.
    rollups.roll_up()
    rows = JobRun.objects.order_by().count()

    def get(path: str):
        def run():
            response = client.get("/api/v1/" + path)
            assert response.status_code == 200, (path, response.status_code, response.content[:300])
        return run

    api = ["metrics/", "trends/?period=30d", "stats/?range=30d", "jobs/?state=FAILURE",
           "jobs/?task_name=app.notify", "jobs/?queue=billing", "jobs/?worker=celery@worker2",
           "jobs/?exception_type=KeyError", "jobs/?range=24h", "jobs/?cursor=", f"jobs/?search={SEARCH_TERM}",
           "jobs/?search=DeliveryError",
           "errors/?range=24h", "timeline/?range=1h", "stuck/", "queues/"]
    base = baselines()
    print(f"\nread API on {rows:,} JobRun rows (p50 of {args.runs} runs, Django test client, PostgreSQL)\n")
    print(f"{'endpoint':34} {'p50 ms':>8} {'queries':>8} {'TaskResult ORM ms':>18} {'ratio':>8}")
    for path in api:
        ms, queries = p50(get(path), args.runs)
        if path in base:
            base_ms, _ = p50(base[path], max(3, args.runs // 3))
            print(f"{path:34} {ms:8.1f} {queries:8d} {base_ms:18.1f} {base_ms / ms:7.1f}x", flush=True)
        else:
            print(f"{path:34} {ms:8.1f} {queries:8d} {'-':>18} {'-':>8}", flush=True)


if __name__ == "__main__":
    main()
