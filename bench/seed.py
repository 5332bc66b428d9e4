"""One seeded job table for the read-side benchmarks (``read_api.py``, ``admin_pages.py``).

Seeding 10 million rows takes a quarter of an hour on a 2-core machine, so both benchmarks read the same
database (default ``jm_bench``) and seed it only when its row count is not the one asked for. The rows:

- ``rows`` job runs over 30 days ending at seed time, 20 task names (``app.tasks.job_0`` .. ``_19``), five
  queues, four workers; 85% succeed, 10% fail (three exception types), 2% revoked, 1% lost, 2% succeed late;
  the newest 20 are still running;
- runtimes spread over 0.05-20 s (log-uniform), so percentiles are not trivial;
- one row in 1,000 has ``SEARCH_TERM`` in its arguments (they cycle ``user0..user999@example.com``);
- the same number of django-celery-results ``TaskResult`` rows (the baselines), copied from the job runs;
- rollups rebuilt for the 31 days, as the periodic roll-up task would have left them.

Loading runs with the secondary indexes and unique constraints dropped and ``synchronous_commit`` off, then
rebuilds them: several times faster than inserting into 17 indexes, and nothing here must survive a crash.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DAYS = 30
TASKS = tuple(f"app.tasks.job_{n}" for n in range(20))
QUEUES = ("default", "emails", "reports", "media", "billing")
WORKERS = 4
EXCEPTIONS = ("TimeoutError", "DeliveryError", "KeyError")
SEARCH_TERM = "user77@example.com"
RUNNING = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def use_database(name: str) -> None:
    """Create the PostgreSQL database ``name`` if missing, point Django at it, set Django up and migrate."""
    import psycopg2

    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13")
    os.environ["DJANGO_SETTINGS_MODULE"] = "jobmonitor.settings"
    os.environ["MONITORING_LOG_LEVEL"] = "ERROR"
    os.environ["DJANGO_DEBUG"] = "0"  # DEBUG would keep every query in memory
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver,localhost"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def estimated_rows(table: str) -> int:
    """The planner's row estimate for ``table`` (exact enough after VACUUM ANALYZE, and free)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        return max(int(cursor.fetchone()[0]), 0)


def ensure_seeded(rows: int, *, reseed: bool = False) -> None:
    """Seed ``rows`` job runs (and TaskResults) unless the table already holds about that many."""
    if not reseed and abs(estimated_rows("monitoring_jobrun") - rows) <= rows * 0.02:
        log(f"reusing the {estimated_rows('monitoring_jobrun'):,} seeded job runs")
        return
    started = time.monotonic()
    log(f"seeding {rows:,} job runs")
    seed(rows)
    log(f"seeded in {time.monotonic() - started:.0f} s")


def _without_indexes(cursor, table: str, load: str, params: list) -> None:
    """Run ``load`` with ``table``'s secondary indexes and unique constraints dropped, then rebuild them."""
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
        started = time.monotonic()
        cursor.execute(load, params)
        log(f"  {table}: rows loaded in {time.monotonic() - started:.0f} s")
    finally:  # a failed load must not leave the table without its indexes
        started = time.monotonic()
        for name, definition in constraints:
            cursor.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}')
        for _, definition in indexes:
            cursor.execute(definition)
        log(f"  {table}: {len(constraints)} constraints and {len(indexes)} indexes rebuilt in "
            f"{time.monotonic() - started:.0f} s")


def seed(rows: int) -> None:
    """Replace the job runs, rollups and TaskResults with ``rows`` seeded rows each (see the module doc)."""
    from django.db import connection
    from django.utils import timezone

    from monitoring import rollups

    now = timezone.now()
    array = "(ARRAY[{}])".format
    tasks = array(",".join(f"'{t}'" for t in TASKS))
    queues = array(",".join(f"'{q}'" for q in QUEUES))
    exceptions = array(",".join(f"'{e}'" for e in EXCEPTIONS))
    jobruns = f"""
        INSERT INTO monitoring_jobrun (task_id, task_name, origin, queue, routing_key, state, args, kwargs,
            arguments_truncated, result, exception_type, exception_message, traceback, worker, retries,
            parent_id, root_id, group_id, retry_of, created_at, published_at, received_at, started_at,
            finished_at, updated_at, wait_time, runtime)
        SELECT md5(i::text)::uuid::text, {tasks}[1 + i %% {len(TASKS)}], 'celery', {queues}[1 + i %% {len(QUEUES)}],
            '', s.state, jsonb_build_array(i, 'user' || (i %% 1000) || '@example.com'), '{{}}'::jsonb, false, '',
            CASE WHEN s.state = 'FAILURE' THEN {exceptions}[1 + i %% {len(EXCEPTIONS)}] ELSE '' END,
            CASE WHEN s.state = 'FAILURE' THEN 'query ' || (i %% 997) || ' exceeded 30s' ELSE '' END,
            '', 'celery@worker' || (i %% {WORKERS}), 0, '', '', '', '',
            s.created, s.created, s.created + interval '50 ms', s.created + interval '100 ms',
            CASE WHEN s.state = 'STARTED' THEN NULL ELSE s.created + interval '100 ms' + s.runtime * interval '1 s' END,
            s.created + interval '100 ms' + s.runtime * interval '1 s', 0.1,
            CASE WHEN s.state IN ('SUCCESS', 'FAILURE') THEN s.runtime END
        FROM (
            SELECT i, %s::timestamptz - (i * %s) * interval '1 s' - interval '10 s' AS created,
                   round((exp(random() * 6) / 20)::numeric, 3)::float AS runtime,
                   CASE WHEN i <= {RUNNING} THEN 'STARTED'
                        WHEN i %% 100 < 85 THEN 'SUCCESS' WHEN i %% 100 < 95 THEN 'FAILURE'
                        WHEN i %% 100 < 97 THEN 'REVOKED' WHEN i %% 100 < 98 THEN 'LOST' ELSE 'SUCCESS' END AS state
            FROM generate_series(1, %s) AS i
        ) AS s
    """
    taskresults = """
        INSERT INTO django_celery_results_taskresult (task_id, status, content_type, content_encoding,
            result, date_done, traceback, meta, task_args, task_kwargs, task_name, worker, date_created,
            periodic_task_name, date_started)
        SELECT task_id, CASE WHEN state = 'LOST' THEN 'FAILURE' ELSE state END, 'application/json', 'utf-8',
               'null', COALESCE(finished_at, updated_at), '', '{}', args::text, kwargs::text, task_name, worker,
               created_at, NULL, started_at
        FROM monitoring_jobrun
    """
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitoring_jobrun, monitoring_jobrollup, monitoring_rollupstate, "
                       "django_celery_results_taskresult RESTART IDENTITY")
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        _without_indexes(cursor, "monitoring_jobrun", jobruns, [now, DAYS * 86_400 / rows, rows])
        _without_indexes(cursor, "django_celery_results_taskresult", taskresults, [])
        started = time.monotonic()
        cursor.execute("VACUUM ANALYZE monitoring_jobrun")
        cursor.execute("VACUUM ANALYZE django_celery_results_taskresult")
        log(f"  vacuum analyze in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    rollups.rebuild(now - timedelta(days=DAYS + 1), now)
    log(f"  rollups rebuilt in {time.monotonic() - started:.0f} s")
