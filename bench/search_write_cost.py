"""What the full-text search index costs capture's writes: the same upserts with and without it.

    python bench/search_write_cost.py --database jm_h_search --rounds 3

Writes ``--rows`` capture-shaped job rows through ``capture.write_rows`` (the capture's own upsert, in
batches of ``--batch`` like a flush), then updates them three times (received, started, finished: the
finish is when a row enters the partial index), into the seeded ``monitoring_jobrun`` with all its real
indexes. Each variant runs in a transaction that is rolled back, so the seeded table is left as it was;
"without" drops the search index inside that transaction, "fastupdate off" switches the GIN pending list
off in it. Each round runs every variant (rotating the order) after a VACUUM; the ratio is the median of
the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.seed import log, use_database


def events(rows: int) -> list[list[dict]]:
    """The four events of ``rows`` jobs, as the capture would flush them: publish, receive, start, finish."""
    start = datetime.now(UTC)
    ids = [str(uuid.uuid4()) for _ in range(rows)]
    publish, receive, begin, finish = [], [], [], []
    for i, task_id in enumerate(ids):
        at = start + timedelta(milliseconds=i)
        failed = i % 10 == 0
        publish.append({"task_id": task_id, "state": "PENDING", "task_name": f"app.tasks.job_{i % 20}",
                        "queue": "default", "args": [i, f"user{i % 1000}@example.com"],
                        "kwargs": {"to": f"bob{i % 50}@example.org", "attempt": 1}, "published_at": at,
                        "created_at": at, "updated_at": at})
        receive.append({"task_id": task_id, "state": "RECEIVED", "received_at": at, "worker": "celery@w1",
                        "created_at": at, "updated_at": at})
        begin.append({"task_id": task_id, "state": "STARTED", "started_at": at, "worker": "celery@w1",
                      "created_at": at, "updated_at": at})
        done = {"task_id": task_id, "state": "FAILURE" if failed else "SUCCESS", "finished_at": at,
                "runtime": 0.1, "created_at": at, "updated_at": at, "result": "" if failed else "42"}
        if failed:
            done.update(exception_type="DeliveryError", exception_message=f"550 mailbox {i} unavailable")
        finish.append(done)
    return [publish, receive, begin, finish]


def run(variant: str, rows: int, batch: int) -> tuple[float, float]:
    """Seconds for the inserts and for the three update passes, in a transaction that is rolled back."""
    from django.db import connection, transaction

    from monitoring import capture, search

    passes = events(rows)
    timings = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            if variant == "without":
                cursor.execute(f'DROP INDEX "{search.INDEX_NAME}"')
            elif variant == "with, fastupdate off":
                cursor.execute(f'ALTER INDEX "{search.INDEX_NAME}" SET (fastupdate = off)')
        for rows_of_pass in passes:
            started = time.perf_counter()
            for first in range(0, len(rows_of_pass), batch):
                capture.write_rows(rows_of_pass[first:first + batch])
            timings.append(time.perf_counter() - started)
        transaction.set_rollback(True)
    log(f"  {variant}: " + ", ".join(f"{t:.2f}" for t in timings) + " s (publish, receive, start, finish)")
    return timings[0], sum(timings[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="jm_bench", help="a seeded PostgreSQL database (read_api.py)")
    parser.add_argument("--rows", type=int, default=20_000, help="jobs written per variant and round")
    parser.add_argument("--batch", type=int, default=100, help="rows per upsert (a capture flush)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    use_database(args.database)
    variants = ("without", "with", "with, fastupdate off")
    results: dict[str, list[tuple[float, float]]] = {variant: [] for variant in variants}
    for round_ in range(args.rounds):
        vacuum()  # the rolled-back rows of the previous round must not slow this one down
        order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
        for variant in order:
            results[variant].append(run(variant, args.rows, args.batch))
    base = [i + u for i, u in results["without"]]
    print(f"\n{args.rows:,} jobs x 4 capture writes (batches of {args.batch}), median of {args.rounds} rounds\n")
    print(f"{'search index':20} {'insert s':>9} {'3 updates s':>12} {'total s':>8} {'vs without':>11}")
    for variant, label in (("without", "no"), ("with", "yes"), ("with, fastupdate off", "yes, no fastupdate")):
        insert = statistics.median(i for i, _ in results[variant])
        updates = statistics.median(u for _, u in results[variant])
        totals = [i + u for i, u in results[variant]]
        # Per-round ratios: the load of a shared machine drifts between rounds more than within one.
        ratio = statistics.median(t / b for t, b in zip(totals, base, strict=True))
        print(f"{label:20} {insert:9.2f} {updates:12.2f} {statistics.median(totals):8.2f} {ratio:10.1%}")


def vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM monitoring_jobrun")


if __name__ == "__main__":
    main()
