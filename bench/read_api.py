"""Benchmark the read API on PostgreSQL against plain ORM aggregates over django-celery-results' TaskResult.

    python bench/read_api.py --rows 10000000          # seeds jm_bench unless it holds 10M rows, then measures
    python bench/read_api.py --rows 10000000 --rebuild-rollups   # after a change to the rollups' layout

The rows come from ``bench/seed.py`` (shared with ``admin_pages.py``, so one seed serves both). Times each
endpoint through the Django test client (p50 of ``--runs``), counts its SQL queries, and prints a table
with the ratio against the TaskResult ORM aggregate for the same figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.seed import SEARCH_TERM, ensure_seeded, log, use_database

# Free-text search terms by how many rows match: 1 in 1,000 (arguments), ~3% (an exception type), about
# 1 in 10,000 (two words of failure messages), none.
SEARCH_TERMS = (SEARCH_TERM, "DeliveryError", "query 996", "nothing-like-this")


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

    def search(term: str) -> Q:
        return (Q(task_id=term) | Q(task_name__icontains=term) | Q(task_args__icontains=term)
                | Q(task_kwargs__icontains=term) | Q(result__icontains=term) | Q(traceback__icontains=term))

    return {
        "metrics/": metrics,
        "trends/?period=30d": lambda: per_task(30),
        "stats/?range=30d": lambda: per_task(30),
        "jobs/?state=FAILURE": jobs_page(status="FAILURE"),
        "jobs/?task_name=app.tasks.job_7": jobs_page(task_name="app.tasks.job_7"),
        "jobs/?range=24h": jobs_page(date_done__gte=timezone.now() - timedelta(hours=24)),
        **{f"jobs/?search={term}": jobs_page(search(term)) for term in SEARCH_TERMS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="JobRun (and TaskResult) rows to seed")
    parser.add_argument("--database", default="jm_bench", help="PostgreSQL database to seed (created if missing)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per endpoint (p50 reported)")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the row count matches")
    parser.add_argument("--rebuild-rollups", action="store_true", help="rebuild the rollups of the seeded 31 days")
    args = parser.parse_args()
    if args.rows < 1_000:
        parser.error("--rows must be at least 1000")

    use_database(args.database)
    ensure_seeded(args.rows, reseed=args.reseed)
    if args.rebuild_rollups:
        from django.utils import timezone

        from monitoring import rollups

        started = time.monotonic()
        rollups.rebuild(timezone.now() - timedelta(days=31), timezone.now())
        log(f"rollups rebuilt in {time.monotonic() - started:.0f} s")

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
            response = client.get("/api/v1/" + path.replace(" ", "+"))
            assert response.status_code == 200, (path, response.status_code, response.content[:300])
        return run

    api = ["metrics/", "trends/?period=30d", "stats/?range=30d", "jobs/?state=FAILURE",
           "jobs/?task_name=app.tasks.job_7", "jobs/?queue=billing", "jobs/?worker=celery@worker2",
           "jobs/?exception_type=KeyError", "jobs/?range=24h", "jobs/?cursor=",
           *(f"jobs/?search={term}" for term in SEARCH_TERMS),
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
