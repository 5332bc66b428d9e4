"""Benchmark the admin pages on a big job table: both dashboards and the JobRun changelist, against the
django-celery-results ``TaskResult`` changelist on the same number of rows (the baseline, same run).

    python bench/admin_pages.py --rows 10000000      # seeds jm_bench unless it holds 10M rows, then measures

Targets: each dashboard's server time p50 <= 300 ms; a JobRun changelist page (unfiltered, one filter)
<= 100 ms. The rows come from ``bench/seed.py`` (shared with ``read_api.py``: one seed serves both), plus 30 days
of demo AI batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.seed import DAYS, ensure_seeded, estimated_rows, log, use_database


def measure(client, url: str, runs: int) -> tuple[float, float]:
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
    parser.add_argument("--database", default="jm_bench", help="PostgreSQL database (created and seeded if needed)")
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the row count matches")
    args = parser.parse_args()

    use_database(args.database)
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from batches import demo as batches_demo
    from batches.models import BatchJob
    from monitoring import rollups

    ensure_seeded(args.rows, reseed=args.reseed)
    if not BatchJob.objects.exists():
        batches_demo.seed(timezone.now(), days=DAYS)
    # What the periodic roll-up task does: the minutes since seeding come from rollups, not JobRun.
    rollups.roll_up()

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
    print(f"Admin pages, {estimated_rows('monitoring_jobrun'):,} job runs and "
          f"{estimated_rows('django_celery_results_taskresult'):,} TaskResult rows (PostgreSQL)")
    print(f"{'page':40} {'p50 ms':>9} {'max ms':>9} {'target':>8} {'ok':>4} {'vs TaskResult':>14}")
    for name, p50, worst, target in rows:
        print(f"{name:40} {p50:9.1f} {worst:9.1f} {target:8d} {'yes' if p50 <= target else 'NO':>4} "
              f"{baseline / p50:13.1f}x")
    print(f"{'TaskResult changelist (baseline)':40} {baseline:9.1f} {baseline_max:9.1f} {'':>8} {'':>4} "
          f"{1.0:13.1f}x")
    # The machine is often shared: the load says how much the figures are worth.
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
