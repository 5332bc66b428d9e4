"""Benchmark the batches pipeline on PostgreSQL: ``create`` and ``process`` against the stand-in server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jm_batches_bench \\
        python bench/batches_pipeline.py --requests 100000 --companies 1000 --process-lines 20000

Targets: create over 100,000 pending requests of 1,000 companies in <= 5 s with <= 20 queries; process at
>= 5,000 result lines per second. Each figure is printed with its ratio to a naive baseline measured in the
same run (one query per company to claim, one UPDATE per result line), the shape the optimisation replaced.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobmonitor.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from batches import pipeline  # noqa: E402
from batches.models import AIProcessingRequest, BatchJob, Company, RequestStatus  # noqa: E402
from batches.standin import start_in_process  # noqa: E402


def reset() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE batches_aiprocessingrequest, batches_batchjob, batches_company, "
                       "batches_pipelinerun, batches_providercircuit RESTART IDENTITY CASCADE")
    cache.clear()


def vacuum() -> None:
    """Clear the dead rows a rolled-back or reset run left, so each measurement starts from the same table."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE batches_aiprocessingrequest")
        cursor.execute("VACUUM ANALYZE batches_batchjob")


def seed(requests: int, companies: int) -> None:
    """Insert companies and pending requests with generate_series (seconds, not minutes)."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO batches_company (name, is_active, created_at) "
                       "SELECT 'Company ' || g, true, now() FROM generate_series(1, %s) g", [companies])
        cursor.execute(
            """
            INSERT INTO batches_aiprocessingrequest (company_id, job_type, model, endpoint, body, line_bytes,
                custom_id, metadata, status, attempts, priority, error_code, error_message, input_tokens,
                cached_input_tokens, output_tokens, reasoning_tokens, requested_at)
            SELECT 1 + (g %% %s), (ARRAY['sentiment','category','summary'])[1 + g %% 3], 'gpt-4o-mini',
                '/v1/chat/completions',
                jsonb_build_object('model', 'gpt-4o-mini', 'max_tokens', 20, 'messages', jsonb_build_array(
                    jsonb_build_object('role', 'user', 'content', 'Classify the sentiment of chat session ' || g))),
                220, 'bench-' || g, '{}'::jsonb, 'pending_batching', 0, 0, '', '', 0, 0, 0, 0,
                now() - interval '1 hour'
            FROM generate_series(1, %s) g
            """, [companies, requests])
        cursor.execute("ANALYZE batches_aiprocessingrequest")


def naive_claim() -> int:
    """Baseline: the per-company loop the optimisation replaced (a query per company and per group)."""
    jobs = 0
    with transaction.atomic():
        for company in Company.objects.filter(is_active=True):
            pending = list(AIProcessingRequest.objects.filter(company=company, status="pending_batching")
                           .select_for_update(skip_locked=True))
            by_model: dict[tuple[str, str], list[AIProcessingRequest]] = {}
            for request in pending:
                by_model.setdefault((request.model, request.endpoint), []).append(request)
            for (model, endpoint), group in by_model.items():
                job = BatchJob.objects.create(company=company, model=model, endpoint=endpoint,
                                              request_count=len(group))
                AIProcessingRequest.objects.filter(id__in=[r.id for r in group]).update(
                    status="batching_in_progress", batch=job)
                jobs += 1
        transaction.set_rollback(True)  # measured only; the real run starts from the same data
    return jobs


PROFILE_DIR: Path | None = None
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process on this host (None if /proc cannot tell, e.g. a remote database)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CPUMeter:
    """CPU seconds this process, the stand-in's process and this connection's PostgreSQL backend spend in a block.

    Two cores are shared by the three: when their sum approaches 2x the wall time, the step is CPU-bound and only
    less work (not more overlap) makes it faster.
    """

    def __init__(self, standin_pid: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        self.pids = {"bench process": os.getpid(), "stand-in process": standin_pid, "PostgreSQL backend": backend}

    def __enter__(self) -> CPUMeter:
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.load = os.getloadavg()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {name: (end - self.start[name]) if end is not None and self.start[name] is not None else None
                     for name, end in ((n, cpu_seconds(pid)) for n, pid in self.pids.items())}
        self.load_after = os.getloadavg()[0]

    def report(self) -> str:
        parts = [f"{name} {used:.2f}s" if used is not None else f"{name} ?" for name, used in self.used.items()]
        return f"CPU: {', '.join(parts)} (load average {self.load:.2f} -> {self.load_after:.2f})"


def measure(func, *args, **kwargs):
    profiler = cProfile.Profile() if PROFILE_DIR else None
    with CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        result = func(*args, **kwargs)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start
    if profiler:
        # Diagnosis only: the profiler slows the measured code down, so its timings are not the results.
        profiler.dump_stats(PROFILE_DIR / f"{func.__name__}.prof")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return result, elapsed, len(queries.captured_queries)


def naive_process(limit: int) -> int:
    """Baseline: parse each line and save its request with one UPDATE per line."""
    import json

    from batches import pricing
    from batches.providers import get_provider

    provider = get_provider()
    lines = 0
    with transaction.atomic():
        for job in BatchJob.objects.unprocessed():
            content = provider.file_content(job.output_file_id)
            for raw in content.splitlines()[:limit]:
                line = json.loads(raw)
                body = line["response"]["body"]
                usage = body["usage"]
                cost = pricing.cost_of(job.model, usage["prompt_tokens"], 0, usage["completion_tokens"])
                AIProcessingRequest.objects.filter(custom_id=line["custom_id"]).update(
                    status="completed", response_body=body, input_tokens=usage["prompt_tokens"],
                    output_tokens=usage["completion_tokens"], cost=cost.batch, sync_cost=cost.sync)
                lines += 1
            if lines >= limit:
                break
        transaction.set_rollback(True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--companies", type=int, default=1_000)
    parser.add_argument("--process-lines", type=int, default=20_000)
    parser.add_argument("--baseline-lines", type=int, default=2_000, help="Lines the naive process baseline reads.")
    parser.add_argument("--profile", type=Path, default=None,
                        help="Write a cProfile of each measured step into this folder and print its top entries.")
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if PROFILE_DIR:
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database, e.g. postgres://postgres@127.0.0.1:5432/jm_bench")
    call_command("migrate", verbosity=0)
    # The stand-in runs in its own process, like the real API: it must not share this process's GIL.
    server = start_in_process(step_seconds=0.01)
    settings.BATCHES = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "bench", "OPENAI_MAX_RETRIES": 0,
                        "CONCURRENCY": 4}
    from batches import conf
    from batches.providers import get_provider

    conf.get_config.cache_clear()
    get_provider.cache_clear()
    get_provider()  # import the SDK and build the client before any timing
    rows = []

    # --- create -------------------------------------------------------------------------------------------
    reset()
    t = time.perf_counter()
    seed(args.requests, args.companies)
    seed_time = time.perf_counter() - t
    vacuum()
    jobs, naive_time, naive_queries = measure(naive_claim)
    vacuum()
    claimed_jobs, claim_time, claim_queries = measure(pipeline._claim_pending, timezone.now())
    claimed = len(claimed_jobs)
    AIProcessingRequest.objects.update(status="pending_batching", batch=None, attempts=0)
    BatchJob.objects.all().delete()
    vacuum()
    cache.clear()
    with CPUMeter(server.process.pid) as cpu:
        create, create_time, create_queries = measure(pipeline.create_batches)
    split = (f"{create.detail['claim_seconds']:.1f}s claim in the database + "
             f"{create.detail['submit_seconds']:.1f}s files and 2 SDK calls per batch\n{cpu.report()}")
    submitted = BatchJob.objects.exclude(provider_batch_id=None).count()
    assert submitted == claimed == jobs, (submitted, claimed, jobs)
    assert not AIProcessingRequest.objects.filter(status="pending_batching").exists()
    rows.append(("create: naive per-company claim (baseline)", naive_time, naive_queries, jobs, 1.0))
    rows.append(("create: claim + group (SKIP LOCKED, bulk)", claim_time, claim_queries, claimed,
                 naive_time / claim_time))
    rows.append(("create: full step incl. upload + create at stand-in", create_time, create_queries, submitted,
                 naive_time / create_time))

    # --- process ------------------------------------------------------------------------------------------
    reset()
    per_company = 5_000
    companies = max(1, args.process_lines // per_company)
    seed(companies * per_company, companies)
    pipeline.create_batches()
    time.sleep(0.1)
    while BatchJob.objects.in_flight().exists():
        pipeline.check_batches()
        time.sleep(0.05)
    base_lines, base_time, _ = measure(naive_process, args.baseline_lines)
    _, process_time, process_queries = measure(pipeline.process_results)
    done = AIProcessingRequest.objects.filter(status=RequestStatus.COMPLETED).count()
    assert done == companies * per_company, done
    base_rate = base_lines / base_time
    rows.append(("process: naive UPDATE per line (baseline)", base_time, None, base_lines, 1.0))
    rows.append(("process: bulk match + one UPDATE FROM unnest", process_time, process_queries, done,
                 (done / process_time) / base_rate))

    print(f"\ncreate, full step: {split}")
    print(f"seeded {args.requests:,} requests / {args.companies:,} companies in {seed_time:.1f}s")
    print(f"{'measurement':<55} {'seconds':>8} {'queries':>8} {'items':>8} {'items/s':>10} {'x baseline':>10}")
    for name, seconds, queries, items, ratio in rows:
        q = "-" if queries is None else str(queries)
        print(f"{name:<55} {seconds:>8.3f} {q:>8} {items:>8,} {items / seconds:>10,.0f} {ratio:>10.1f}")
    server.stop()


if __name__ == "__main__":
    main()
